"""Image captioning on cached CNN features (pure PyTorch; no Ray, no MLflow).

Modules:

* :mod:`.models`: :class:`CaptionModelConfig`, Show-and-Tell and
  Show-Attend-and-Tell decoders, the ``MODELS`` / ``CELLS`` registries,
  :func:`build_model`.
* :mod:`.losses`: masked (label-smoothed) cross-entropy, the doubly stochastic
  attention penalty, :func:`caption_loss`.
* :mod:`.decoding`: greedy search, batched beam search, a per-image reference
  beam search.
* :mod:`.train`: :class:`CaptionDataset`, :func:`train_step`, :func:`evaluate_loss`.
* :mod:`.io`: the model folder (weights, config, vocab) save / load.
"""

from components.captioning.decoding import DecodeResult, beam_search, beam_search_single, greedy_decode
from components.captioning.io import load_model_dir, save_model_dir
from components.captioning.losses import LossConfig, caption_loss
from components.captioning.models import CELLS, MODELS, CaptionModel, CaptionModelConfig, CaptionOutput, build_model
from components.captioning.train import CaptionDataset, collate_captions, evaluate_loss, train_step

__all__ = [
    "CELLS", "MODELS", "CaptionDataset", "CaptionModel", "CaptionModelConfig", "CaptionOutput", "DecodeResult",
    "LossConfig", "beam_search", "beam_search_single", "build_model", "caption_loss", "collate_captions",
    "evaluate_loss", "greedy_decode", "load_model_dir", "save_model_dir", "train_step",
]
