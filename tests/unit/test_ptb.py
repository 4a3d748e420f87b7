"""The pure-Python PTB tokenizer against pycocoevalcap's Java one, the cache, detokenize."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.data import ptb, text
from components.data.scene_language import (
    MANY_OBJECT_TEMPLATES,
    ONE_OBJECT_TEMPLATES,
    TWO_OBJECT_TEMPLATES,
    canonical_caption,
    reference_captions,
)
from components.data.synthetic import sample_scene

CORPUS = json.loads((Path(__file__).parents[1] / "fixtures" / "ptb_corpus.json").read_text(encoding="utf-8"))
ITEMS = CORPUS["captions"]
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")


def _expected(item: dict) -> list[str]:
    return item["ptb"].split(" ") if item["ptb"] else []


def test_corpus_covers_the_cases_and_real_style_captions():
    categories = {it["category"] for it in ITEMS}
    assert categories >= {"possessives", "contractions", "hyphens", "punctuation", "numbers", "symbols",
                          "case_and_space", "non_ascii", "abbreviations", "british", "coco_style"}
    assert sum(it["category"] == "coco_style" for it in ITEMS) >= 100


@pytest.mark.parametrize("category", sorted({it["category"] for it in ITEMS}))
def test_python_tokens_equal_pycocoevalcap_java_tokens(category):
    items = [it for it in ITEMS if it["category"] == category]
    got = {it["caption"]: ptb.ptb_tokenize(it["caption"]) for it in items}
    assert got == {it["caption"]: _expected(it) for it in items}


def test_ptb_conventions_that_differ_from_the_old_normalizer():
    assert ptb.ptb_tokenize("A man's T-shirt.") == ["a", "man", "'s", "t-shirt"]
    assert ptb.ptb_tokenize("They don't, can't (won't)!") == ["they", "do", "n't", "ca", "n't", "-lrb-", "wo",
                                                                "n't", "-rrb-"]
    assert ptb.ptb_tokenize("A grey colour, 3.5 inches; Mr. Smith.") == ["a", "grey", "colour", "3.5", "inches",
                                                                          "mr.", "smith"]
    assert text.tokenize("A man's T-shirt.") == ["a", "man", "s", "t", "shirt"]  # the legacy rule


@needs_java
def test_python_tokens_equal_live_java():
    captions = [it["caption"] for it in ITEMS] + ["", "?!", "The U.S. A dog etc.", "ellipsis.. four...."]
    java = ptb.java_ptb_tokenize(captions)
    assert len(java) == len(captions)
    assert {c: ptb.ptb_tokenize(c) for c in captions} == dict(zip(captions, java))


@needs_java
def test_the_batch_equals_pycocoevalcap_own_call():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = [it["caption"] for it in ITEMS[:40]]
    theirs = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert [" ".join(t) for t in ptb.java_ptb_tokenize(captions)] == [theirs[i][0] for i in range(len(captions))]


def test_cache_is_content_addressed_and_spares_java(tmp_path, monkeypatch):
    captions = [it["caption"] for it in ITEMS[:30]]
    calls = []

    def fake_java(caps, *, java="java"):
        calls.append(len(caps))
        return ptb.ptb_tokenize_all(caps)

    monkeypatch.setattr(ptb, "java_ptb_tokenize", fake_java)
    first, used = ptb.tokenize_captions(captions, cache_dir=tmp_path, java="java")
    assert used == "ptb_java" and calls == [30]  # the whole dataset in one call
    assert [p.name for p in tmp_path.iterdir()] == [f"{ptb._cache_key(captions)}.json"]  # no temporary left
    again, used = ptb.tokenize_captions(captions, cache_dir=tmp_path, java="java")
    assert again == first and used == "ptb_java" and calls == [30]  # from the cache
    other, _ = ptb.tokenize_captions(captions[:-1], cache_dir=tmp_path, java="java")
    assert calls == [30, 29] and other == first[:-1]


def test_without_java_the_python_tokenizer_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(ptb, "java_ptb_tokenize", lambda *a, **k: pytest.fail("java called"))
    monkeypatch.setattr(ptb.shutil, "which", lambda name: None)
    tokens, used = ptb.tokenize_captions(["A man's hat."], cache_dir=tmp_path)
    assert (tokens, used) == ([["a", "man", "'s", "hat"]], "ptb_python")
    assert list(tmp_path.iterdir()) == []  # only Java's output is cached


@pytest.mark.parametrize("category", sorted({it["category"] for it in ITEMS}))
def test_detokenize_round_trips(category):
    for it in (it for it in ITEMS if it["category"] == category):
        assert ptb.ptb_tokenize(ptb.detokenize(it["ptb"])) == _expected(it), it["caption"]


def test_detokenize_joins_clitics_and_brackets():
    assert ptb.detokenize("a man 's hat") == "a man's hat"
    assert ptb.detokenize("i do n't know , ca n't wo n't") == "i don't know , can't won't"
    assert ptb.detokenize(["a", "man", "-lrb-", "with", "a", "hat", "-rrb-"]) == "a man (with a hat)"
    assert ptb.detokenize("a t-shirt and b&w photo") == "a t-shirt and B&W photo"


def _synthetic_captions(n_scenes: int = 300) -> list[str]:
    rng = np.random.default_rng(0)
    captions = []
    for _ in range(n_scenes):
        scene = sample_scene(rng, max_objects=3)
        ordered = sorted(scene, key=lambda o: o.x)
        captions += reference_captions(scene, rng, n=5)
        captions.append(canonical_caption(scene))
        templates = {1: ONE_OBJECT_TEMPLATES, 2: TWO_OBJECT_TEMPLATES}.get(len(ordered), MANY_OBJECT_TEMPLATES)
        captions += [template(ordered, rng) for template in templates]  # every template, every scene size
    return captions


def test_synthetic_captions_have_the_same_tokens_as_before():
    captions = _synthetic_captions()
    assert len(set(captions)) > 500
    for caption in captions:
        assert ptb.ptb_tokenize(caption) == text.tokenize(caption), caption
        assert ptb.detokenize(text.tokenize(caption)) == " ".join(text.tokenize(caption))  # identity


@needs_java
def test_synthetic_captions_java_tokens_equal_the_old_ones():
    captions = sorted(set(_synthetic_captions(100)))
    assert ptb.java_ptb_tokenize(captions) == [text.tokenize(c) for c in captions]


def test_decoded_captions_are_detokenized_for_people():
    vocab = text.Vocab.build([["a", "man", "'s", "hat", "do", "n't"]], min_word_count=1, max_caption_length=8)
    ids = vocab.encode(["a", "man", "'s", "hat"])
    assert ptb.detokenize(vocab.decode(ids)) == "a man's hat"
    assert ptb.vocab_tokens("A man's café.") == ["a", "man", "'s", "cafe"]  # what the imagine encoder reads
