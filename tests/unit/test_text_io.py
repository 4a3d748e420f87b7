"""Tokenization, vocabulary and atomic outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from components.data import text
from components.io import atomic_dir, atomic_file, write_json


def test_tokenize_normalizes_case_punctuation_and_unicode():
    assert text.tokenize("A Red  circle, LEFT of a café!") == ["a", "red", "circle", "left", "of", "a", "cafe"]
    assert text.tokenize("naïve   façade — 2 objects") == ["naive", "facade", "2", "objects"]
    assert text.tokenize("日本語") == []
    assert text.tokenize("   ...  ") == []


def test_vocab_build_order_threshold_and_roundtrip():
    caps = [["a", "red", "circle"], ["a", "blue", "circle"], ["a", "red", "square"]]
    vocab = text.Vocab.build(caps, min_word_count=2, max_caption_length=3)
    assert vocab.tokens == text.SPECIAL_TOKENS + ("a", "circle", "red")
    ids = vocab.encode(["a", "blue", "circle", "extra"])
    assert ids == [vocab.start_id, vocab.id("a"), vocab.unk_id, vocab.id("circle"), vocab.end_id]
    assert vocab.decode(ids) == "a <unk> circle"
    assert vocab.decode([1, 4, 2, 5, 5]) == "a"  # stops at <end>
    assert text.Vocab.from_json(vocab.to_json()) == vocab


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_file_and_json(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": 2})
    assert path.read_text().startswith('{\n  "a": 2')
    with pytest.raises(ValueError), atomic_file(path) as f:
        f.write("partial")
        raise ValueError
    assert '"a": 2' in path.read_text()


def test_killed_process_leaves_no_output_and_rerun_cleans_up(tmp_path, repo_root):
    """SIGKILL inside atomic_dir: the final folder never appears half-written."""
    out = tmp_path / "out"
    code = (
        "import os, signal\n"
        "from components.io import atomic_dir\n"
        f"with atomic_dir({str(out)!r}) as tmp:\n"
        "    (tmp / 'half.txt').write_text('x')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path)
    assert proc.returncode == -9
    assert not out.exists()
    assert any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir())
    with atomic_dir(out) as tmp:  # the rerun
        (tmp / "full.txt").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
