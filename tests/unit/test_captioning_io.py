"""Model folder: save, rebuild from the folder alone, identical outputs."""

from __future__ import annotations

import json

import pytest
import torch

from components.captioning.decoding import beam_search
from components.captioning.io import load_model_dir, save_model_dir
from components.captioning.models import CaptionerConfig, build_model
from components.config import ConfigError
from components.data.text import Vocab


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to OpenMP oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


WORDS = ("a", "red", "circle", "blue", "square", "left", "of")


@pytest.mark.parametrize("arch,cell", [("show_attend_tell", "gru"), ("show_tell", "lstm")])
def test_round_trip_gives_identical_outputs(tmp_path, arch, cell):
    vocab = Vocab.build([WORDS], min_word_count=1, max_caption_length=8)
    cfg = CaptionerConfig(architecture=arch, cell=cell, vocab_size=len(vocab), feature_dim=8, num_positions=4,
                             embed_dim=6, hidden_dim=12, num_layers=2, dropout=0.3, attention_dim=5,
                             grid_layers=0, position_embedding=False)
    torch.manual_seed(0)
    model = build_model(cfg)
    extra = {"backbone": "resnet18", "image_size": 224}
    save_model_dir(tmp_path / "captioner", model, cfg, vocab, extra)
    assert sorted(p.name for p in (tmp_path / "captioner").iterdir()) == ["config.json", "model.pt", "vocab.json"]
    meta = json.loads((tmp_path / "captioner" / "config.json").read_text())
    assert meta["family"] == "captioner" and meta["config"]["architecture"] == arch and meta["extra"] == extra
    assert meta["parts"] == {"model": "model.pt"} and meta["files"] == ["vocab.json"]

    loaded, cfg2, vocab2, extra2 = load_model_dir(tmp_path / "captioner")
    assert (cfg2, vocab2, extra2) == (cfg, vocab, extra)
    assert not loaded.training
    model.eval()
    grid = torch.randn(3, 4, 8)
    tokens = torch.tensor([[1, 4, 5, 2], [1, 6, 2, 0], [1, 7, 8, 9]])
    assert torch.equal(loaded(grid, grid.mean(1), tokens).logits, model(grid, grid.mean(1), tokens).logits)
    a = beam_search(model, grid, grid.mean(1), beam_size=2, max_length=5)
    b = beam_search(loaded, grid, grid.mean(1), beam_size=2, max_length=5)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.log_probs, b.log_probs)


def test_mismatches_are_refused(tmp_path):
    vocab = Vocab.build([WORDS], min_word_count=1, max_caption_length=8)
    cfg = CaptionerConfig(architecture="show_tell", cell="gru", vocab_size=len(vocab), feature_dim=4,
                             num_positions=1, embed_dim=4, hidden_dim=4, num_layers=1, dropout=0.0,
                             attention_dim=4, grid_layers=0, position_embedding=False)
    model = build_model(cfg)
    with pytest.raises(ValueError, match="vocab_size"):
        save_model_dir(tmp_path / "m", model, CaptionerConfig(**{**cfg.to_dict(), "vocab_size": 5}), vocab)
    save_model_dir(tmp_path / "m", model, cfg, vocab)
    meta_path = tmp_path / "m" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["hidden_size"] = 3
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="hidden_size"):
        load_model_dir(tmp_path / "m")
