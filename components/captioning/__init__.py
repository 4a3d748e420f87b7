"""Image captioning on cached CNN features (pure PyTorch; no Ray, no MLflow).

Modules:

* :mod:`.config`: the params groups :class:`CaptionerModelParams`, :class:`CaptionerTrainParams`
  (a leaf module: loading params imports no model code).
* :mod:`.models`: :class:`CaptionerConfig`, Show-and-Tell and
  Show-Attend-and-Tell decoders, the ``MODELS`` / ``CELLS`` registries,
  :func:`build_model`.
* :mod:`.losses`: masked (label-smoothed) cross-entropy, the doubly stochastic
  attention penalty, :func:`caption_loss`.
* :mod:`.decoding`: greedy search, batched beam search, a per-image reference
  beam search.
* :mod:`.train`: :class:`CaptionDataset`, :func:`train_step`, :func:`evaluate_loss`.
* :mod:`.io`: the model folder (weights, config, vocab) save / load.
* :mod:`.family`: the ``captioner`` family spec the pipeline's stages run.
* :mod:`.rewards`, :mod:`.scst`, :mod:`.finetune`: self-critical sequence training (the sequence
  rewards, the baselines and loss, the loop); :mod:`.scst_family`: the ``scst`` family, whose stage
  is ``finetune_captioner``.
"""

from components.families import Entry

# the model families of this package (components.families finds them here)
FAMILIES = {"captioner": Entry(params="components.captioning.config:CaptionerParams",
                               spec="components.captioning.family:CAPTIONER"),
            "scst": Entry(params="components.captioning.config:SCSTParams",
                          spec="components.captioning.scst_family:SCST", stage="finetune_captioner")}
