"""components.metrics.cider: CIDEr-D with fixed document frequencies equals pycocoevalcap's scorer."""

from __future__ import annotations

import numpy as np
import pytest
from pycocoevalcap.cider.cider_scorer import CiderScorer

from components.metrics.cider import CiderD

REFS = [
    ["a small red circle left of a large blue square", "a red circle to the left of a blue square",
     "small red circle and large blue square"],
    ["a large green triangle", "a big green triangle", "one large green triangle in the middle"],
    ["a blue square above a red circle", "a small blue square above a small red circle",
     "blue square over red circle", "a square above a circle"],
    ["two yellow circles", "a yellow circle right of a yellow circle"],
]
CANDIDATES = ["a small red circle left of a blue square", "a green triangle", "a blue square above a circle",
              "a yellow circle right of a yellow circle yellow circle", "", "square"]
OWNERS = [0, 1, 2, 3, 1, 2]  # which image each candidate describes


def _split(refs):
    return [[r.split() for r in rs] for rs in refs]


def _coco_caption(candidates, owners):
    """pycocoevalcap's CIDEr-D, document frequencies from the scored references (its only mode)."""
    scorer = CiderScorer(n=4, sigma=6.0)
    for cand, owner in zip(candidates, owners):
        scorer += (cand, REFS[owner])
    return scorer.compute_score()[1]


def test_equals_pycocoevalcap_given_the_same_document_frequencies():
    want = _coco_caption(CANDIDATES, OWNERS)
    # coco-caption's corpus is one entry per scored candidate: the same here
    cider = CiderD([_split(REFS)[o] for o in OWNERS])
    got = cider.scores([c.split() for c in CANDIDATES], [_split(REFS)[o] for o in OWNERS])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert got[4] == 0.0 and got.max() > 1.0


def test_equals_pycocoevalcap_on_random_captions_with_repeated_words():
    rng = np.random.default_rng(0)
    words = "a red blue green circle square left right of above the small large".split()

    def sentence():
        return " ".join(rng.choice(words, size=rng.integers(1, 12)))

    refs = [[sentence() for _ in range(rng.integers(1, 6))] for _ in range(60)]
    cands = [sentence() for _ in refs]
    scorer = CiderScorer(n=4, sigma=6.0)
    for cand, rs in zip(cands, refs):
        scorer += (cand, rs)
    want = scorer.compute_score()[1]
    split_refs = [[r.split() for r in rs] for rs in refs]
    got = CiderD(split_refs).scores([c.split() for c in cands], split_refs)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_token_ids_score_like_words_and_k_samples_can_share_one_reference_list():
    vocab = {w: i for i, w in enumerate(sorted({w for rs in REFS for r in rs for w in r.split()} | {"x"}))}
    words = CiderD(_split(REFS))
    ids = CiderD([[[vocab[w] for w in r] for r in rs] for rs in _split(REFS)])
    refs = _split(REFS)[0]
    samples = ["a small red circle left of a blue square", "a red circle", "x x x"]
    by_words = words.scores([s.split() for s in samples], [refs] * 3)
    by_ids = ids.scores([[vocab[w] for w in s.split()] for s in samples], [[[vocab[w] for w in r] for r in refs]] * 3)
    np.testing.assert_allclose(by_words, by_ids, rtol=0, atol=1e-12)
    assert by_words[0] > by_words[1] > by_words[2] == 0.0


def test_fixed_document_frequencies_make_a_score_independent_of_the_batch():
    cider = CiderD(_split(REFS))
    alone = cider.scores([CANDIDATES[0].split()], [_split(REFS)[0]])
    in_batch = cider.scores([c.split() for c in CANDIDATES], [_split(REFS)[o] for o in OWNERS])
    assert alone[0] == pytest.approx(in_batch[0], abs=1e-12)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="at least one image"):
        CiderD([])
    cider = CiderD(_split(REFS))
    with pytest.raises(ValueError, match="2 candidates but 1 reference"):
        cider.scores([["a"], ["b"]], [[["a"]]])
    with pytest.raises(ValueError, match="at least one reference"):
        cider.scores([["a"]], [[]])
