"""The one model folder format: what every family writes and reads."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from components.model_folder import (CONFIG_FILE, FORMAT_VERSION, find_model_folder, read_model_folder,
                                     write_model_folder)


def test_parts_files_config_and_extra_round_trip(tmp_path):
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    out = write_model_folder(tmp_path / "m", family="toy", config={"width": 2}, parts={"layer": layer},
                             files={"labels.json": ["a", "b"]}, extra={"run": "toy-1"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "labels.json", "layer.pt"]
    folder = read_model_folder(out, family="toy")
    assert (folder.family, folder.config, folder.extra) == ("toy", {"width": 2}, {"run": "toy-1"})
    assert folder.read_file("labels.json") == ["a", "b"]
    state = folder.state_dict("layer")
    assert all(torch.equal(state[k], v) for k, v in layer.state_dict().items())
    with pytest.raises(KeyError, match="no part 'head'"):
        folder.state_dict("head")


def test_the_same_weights_give_the_same_bytes(tmp_path):
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    a = write_model_folder(tmp_path / "a", family="toy", config={}, parts={"layer": layer})
    b = write_model_folder(tmp_path / "b", family="toy", config={}, parts={"layer": layer.state_dict()})
    for name in ("layer.pt", CONFIG_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_another_family_an_old_format_and_no_folder_are_named(tmp_path):
    out = write_model_folder(tmp_path / "m", family="vae", config={}, parts={"vae": nn.Linear(1, 1)})
    with pytest.raises(ValueError, match="a 'vae' model, expected captioner"):
        read_model_folder(out, family="captioner")
    meta = json.loads((out / CONFIG_FILE).read_text())
    (out / CONFIG_FILE).write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ValueError, match=f"config.json: format_version 1, expected {FORMAT_VERSION}"):
        read_model_folder(out)
    with pytest.raises(FileNotFoundError, match="not a model folder: no config.json"):
        read_model_folder(tmp_path / "nothing")
    with pytest.raises(ValueError, match="needs at least one part"):
        write_model_folder(tmp_path / "x", family="toy", config={}, parts={})
    with pytest.raises(ValueError, match="taken by the folder's own files"):
        write_model_folder(tmp_path / "x", family="toy", config={}, parts={"a": nn.Linear(1, 1)},
                           files={"a.pt": {}})


def test_find_takes_the_shallowest_folder_of_the_family(tmp_path):
    write_model_folder(tmp_path / "artifacts" / "deep" / "model", family="gan", config={},
                       parts={"generator": nn.Linear(1, 1)})
    write_model_folder(tmp_path / "artifacts" / "other", family="vae", config={}, parts={"vae": nn.Linear(1, 1)})
    assert find_model_folder(tmp_path, ("vae", "gan")) == tmp_path / "artifacts" / "other"
    assert find_model_folder(tmp_path, "gan") == tmp_path / "artifacts" / "deep" / "model"
    with pytest.raises(FileNotFoundError, match="no captioner model folder"):
        find_model_folder(tmp_path, "captioner")
