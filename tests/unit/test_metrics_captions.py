"""components.metrics.captions: agreement with pycocoevalcap, a hand-worked case, no-Java and no-SPICE paths."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from components.metrics import captions

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "caption_agreement.json"
needs_java = pytest.mark.skipif(captions.find_java() is None, reason="needs a Java runtime")


def _fixture() -> tuple[dict[int, str], dict[int, list[str]]]:
    data = json.loads(FIXTURE.read_text())
    return ({int(k): v for k, v in data["candidates"].items()},
            {int(k): v for k, v in data["references"].items()})


@pytest.fixture
def no_spice_jars(tmp_path, monkeypatch):
    """SPICE's CoreNLP jars absent, and SPICE must not even be built (it would download them)."""
    monkeypatch.setattr(captions, "SPICE_LIB", tmp_path)

    def refuse(*_):
        raise AssertionError("SPICE was built without its jars")

    monkeypatch.setattr(captions, "_spice", refuse)


@needs_java
def test_coco_scores_equal_pycocoevalcap_scorers(no_spice_jars):
    cands, refs = _fixture()
    got = captions.coco_scores(cands, refs)
    # pycocoevalcap called directly, as COCOEvalCap.evaluate() does minus SPICE
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in refs[i]] for i in refs})
    res = tok.tokenize({i: [{"caption": cands[i]}] for i in cands})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    want = {f"bleu_{n + 1}": b for n, b in enumerate(bleu)}
    want["meteor"] = captions.meteor_score(gts, res)  # pycocoevalcap's Meteor, its pipes closed after
    want["rouge_l"] = Rouge().compute_score(gts, res)[0]
    want["cider"] = Cider().compute_score(gts, res)[0]
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert got["tokenizer"] == "ptb" and got["n_images"] == 6
    # the fixture is not trivially scored: every metric is strictly between 0 and its maximum
    assert all(0 < got[k] < 1 for k in want if k != "cider") and got["cider"] > 0
    assert got["spice"] is None and got["unavailable"] == ["spice"]
    assert "never downloaded" in got["unavailable_reasons"]["spice"]


@needs_java
def test_bleu_and_cider_hand_worked(no_spice_jars):
    # Two images, one reference each (already lower case, no punctuation: PTB leaves them as they are).
    cands = {1: "a red circle", 2: "a blue circle"}
    refs = {1: ["a red square"], 2: ["a blue circle"]}
    got = captions.coco_scores(cands, refs)
    # BLEU (corpus level, clipped n-gram precision p_n, brevity penalty 1: candidate lengths 3 = reference 3):
    #   unigrams  matched 2 (a, red) + 3 = 5 of 6         p1 = 5/6
    #   bigrams   matched 1 (a red) + 2 = 3 of 4          p2 = 3/4
    #   trigrams  matched 0 + 1 = 1 of 2                  p3 = 1/2
    #   4-grams   none at all: pycocoevalcap's smoothing gives (0 + 1e-15) / (0 + 1e-9) = 1e-6
    #   BLEU-n = (p1 ... pn) ** (1 / n)
    assert got["bleu_1"] == pytest.approx(5 / 6, abs=1e-8)
    assert got["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 4), abs=1e-8)  # 0.7906
    assert got["bleu_3"] == pytest.approx((5 / 6 * 3 / 4 * 1 / 2) ** (1 / 3), abs=1e-8)  # 0.6786
    assert got["bleu_4"] == pytest.approx((5 / 6 * 3 / 4 * 1 / 2 * 1e-6) ** (1 / 4), abs=1e-8)  # 0.0236
    # CIDEr-D: N = 2 images; idf(g) = log N - log max(1, df(g)), df over the references:
    #   "a" is in both references: idf 0; every other n-gram of a reference: idf log 2;
    #   a candidate n-gram in no reference ("red circle", "a red circle"): df 0 -> idf log 2.
    #   Per n, cosine of the tf-idf vectors (clipped by min(hyp, ref)), Gaussian length penalty
    #   exp(-(3-3)^2 / (2 * 6^2)) = 1; per image mean over n = 1..4, times 10.
    #   image 1: n=1 hyp {a:0, red:L, circle:L} ref {a:0, red:L, square:L}: L^2 / (sqrt(2)L)^2 = 1/2
    #            n=2 hyp {a red, red circle} ref {a red, red square}: 1/2; n=3 no overlap: 0;
    #            n=4 no 4-grams (zero norms): 0  -> 10 * (1/2 + 1/2 + 0 + 0) / 4 = 2.5
    #   image 2: identical to its reference: n=1..3 cosine 1, n=4: 0 -> 10 * 3/4 = 7.5
    #   corpus CIDEr-D = mean(2.5, 7.5) = 5.0
    assert got["cider"] == pytest.approx(5.0, abs=1e-9)


def test_without_java_lists_what_it_could_not_compute(monkeypatch, no_spice_jars):
    monkeypatch.setattr(captions, "find_java", lambda: None)

    def refuse(*_):
        raise AssertionError("the PTB tokenizer needs Java")

    monkeypatch.setattr(captions, "ptb_tokenize", refuse)
    cands, refs = _fixture()
    got = captions.coco_scores(cands, refs)
    assert got["tokenizer"] == "ptb_python"
    assert got["meteor"] is None and got["spice"] is None
    assert got["unavailable"] == ["meteor", "spice"]
    assert "java" in got["unavailable_reasons"]["meteor"]
    assert "java" in got["unavailable_reasons"]["ptb_tokenizer"]
    # the pure-Python scorers still run, on the pure-Python PTB tokens
    gts = captions.python_ptb_tokenize(refs)
    res = captions.python_ptb_tokenize({i: [c] for i, c in cands.items()})
    assert res[5] == ["the cat is sleeping on the laptop 's keyboard"]  # PTB, not the legacy "laptop s"
    assert got["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)
    assert 0 < got["bleu_1"] < 1 and 0 < got["rouge_l"] < 1


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
def test_python_fallback_gives_the_java_numbers(monkeypatch, no_spice_jars):
    cands, refs = _fixture()
    with_java = captions.coco_scores(cands, refs)
    monkeypatch.setattr(captions, "find_java", lambda: None)
    without = captions.coco_scores(cands, refs)
    assert (with_java["tokenizer"], without["tokenizer"]) == ("ptb", "ptb_python")
    for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"):
        assert without[name] == pytest.approx(with_java[name], abs=1e-12), name


def test_spice_runs_only_when_its_jars_are_present(monkeypatch, tmp_path):
    for jar in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (tmp_path / jar).write_bytes(b"")
    monkeypatch.setattr(captions, "SPICE_LIB", tmp_path)
    monkeypatch.setattr(captions, "find_java", lambda: "/usr/bin/java")
    monkeypatch.setattr(captions, "ptb_tokenize", captions.simple_tokenize)
    monkeypatch.setattr(captions, "meteor_score", lambda gts, res: 0.5)
    monkeypatch.setattr(captions, "_spice", lambda gts, res: 0.25)
    got = captions.coco_scores({1: "a red circle"}, {1: ["a red circle"]})
    assert got["spice"] == 0.25 and got["unavailable"] == []


def test_mismatched_ids_are_refused():
    with pytest.raises(ValueError, match="image 2"):
        captions.coco_scores({1: "a", 2: "b"}, {1: ["a"]})
