"""Pascal-50S judged pairs: the reader, the metrics' agreement with people, the stage.

The fixture (``tests/fixtures_formats.py``, ``PASCAL50S_PAIRS``) is 8 pairs in
the real ``.mat`` layout, 2 per kind, 4 triplets each. Its BLEU-1 accuracy is
worked by hand below (sentence BLEU-1 = clipped unigram precision x brevity
penalty against the closest reference length; references: dog = "a dog on a
rug" (5 words), "a brown dog sleeps" (4), "the dog is sleeping" (4), "a dog lies
on the floor" (6); plane = "a plane on a runway" (5), "a white airplane parked"
(4), "the plane is on the ground" (6), "an airplane at the airport" (5)):

====  ====  ==================================  ===================  ======  ==========  =====
pair  kind  A vs B                              BLEU-1 A vs B        metric  people      point
====  ====  ==================================  ===================  ======  ==========  =====
1     HC    "a dog sleeps on a rug" / "a cat    6/6 = 1 vs 3/5 = .6  A       A (3:1)     1
            on a sofa"
2     HI    "a brown dog" / "a plane on a       ...                  ...     tie (2:2)   0.5
            runway"
3     HM    "a dog" / "a is on the"             1·e^(1-4/2) = .37    B       A (4:0)     0
                                                vs 4/4 = 1
4     MM    "a brown dog" / "on a the"          both 3/3·e^(1-4/3)   tie     B (1:3)     0.5
5     HC    "a big bird in the sky" / "a white  2/6 vs 6/6           B       B (0:4)     1
            airplane on the ground"
6     HI    "a plane on the runway" / "a brown  5/5 vs 1/4           A       B (1:3)     0
            dog sleeps"
7     HM    "the airplane is parked" / "a dog   4/4 vs 3/5           A       A (3:1)     1
            on a rug"
8     MM    "two cats play" / "red hot sun"     both 0/3             tie     A (3:1)     0.5
====  ====  ==================================  ===================  ======  ==========  =====

So BLEU-1 scores HC 1.0, HI 0.25, HM 0.5, MM 0.5, all 4.5 / 8 = 0.5625, with
one human tie (pair 2) and two metric ties (pairs 4 and 8, both in MM).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.data.pascal50s_consensus import read_consensus
from components.data.schema import DatasetFormatError
from components.metrics import captions
from components.metrics import human_agreement as ha
from pipelines import pascal50s as stage
from pipelines.config import ConfigError, Pascal50sConfig
from tests.fixtures_formats import PASCAL50S_PAIRS, pascal50s_triplets, write_pascal50s_consensus

needs_java = pytest.mark.skipif(captions.find_java() is None, reason="needs a Java runtime")

BLEU_1 = {"HC": 1.0, "HI": 0.25, "HM": 0.5, "MM": 0.5, "all": 0.5625}


@pytest.fixture
def no_java(monkeypatch):
    """The pure-Python PTB tokenizer, no METEOR: fast and the same on every machine."""
    monkeypatch.setattr(captions, "find_java", lambda: None)


def test_reader_counts_votes_categories_and_references(tmp_path):
    consensus = read_consensus(write_pascal50s_consensus(tmp_path))
    assert consensus.judgements_per_pair == 4
    pairs = consensus.pairs
    assert [p.category for p in pairs] == ["HC", "HI", "HM", "MM"] * 2
    assert [(p.votes_a, p.votes_b) for p in pairs] == [(3, 1), (2, 2), (4, 0), (1, 3),
                                                      (0, 4), (1, 3), (3, 1), (3, 1)]
    assert [p.human_choice for p in pairs] == [1, 0, 1, -1, -1, -1, 1, 1]
    # pair 6 stores two of its triplets as (B, C) = (b, a): the votes still go to the right candidate
    assert pairs[5].a == "a plane on the runway" and (pairs[5].votes_a, pairs[5].votes_b) == (1, 3)
    # references: the triplets' sentences A, stripped (the fixture pads the first one with a space)
    assert pairs[0].references == ("a dog on a rug", "a brown dog sleeps", "the dog is sleeping",
                                   "a dog lies on the floor")


def test_bleu_1_accuracy_is_the_hand_worked_one(tmp_path, no_java):
    result = ha.evaluate_agreement(read_consensus(write_pascal50s_consensus(tmp_path)),
                                   num_refs=0, seed=0, spice=False)
    assert result["accuracy"]["bleu_1"] == pytest.approx(BLEU_1, abs=1e-12)
    assert result["metric_ties"]["bleu_1"] == {"HC": 0, "HI": 0, "HM": 0, "MM": 2, "all": 2}
    assert result["human_ties"] == {"HC": 0, "HI": 1, "HM": 0, "MM": 0, "all": 1}
    assert result["n_pairs"] == {"HC": 2, "HI": 2, "HM": 2, "MM": 2, "all": 8}
    assert (result["judgements_per_pair"], result["refs_per_pair"], result["tokenizer"]) == (4, 4, "ptb_python")
    # every metric that runs without Java is scored; METEOR and SPICE are named with their reason
    for name in ("bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"):
        acc = result["accuracy"][name]
        assert set(acc) == {"HC", "HI", "HM", "MM", "all"} and 0.0 <= acc["all"] <= 1.0
    assert result["unavailable"] == ["meteor", "spice"]
    assert "java" in result["unavailable_reasons"]["meteor"]


def test_agreement_rules():
    humans = np.array([1, 1, -1, 0, 1])
    metric = ha.preferences(np.array([2.0, 1.0, 0.3, 5.0, 1.0]), np.array([1.0, 2.0, 0.1, 1.0, 1.0 + 1e-14]))
    assert metric.tolist() == [1, -1, 1, 1, 0]  # the last: equal to a relative 1e-12
    assert ha.agreement_points(humans, metric).tolist() == [1.0, 0.0, 0.0, 0.5, 0.5]


def test_reference_draw_is_seeded_without_replacement_and_zero_takes_all(tmp_path):
    pairs = read_consensus(write_pascal50s_consensus(tmp_path)).pairs
    drawn = ha.sample_references(pairs, num_refs=2, seed=7)
    assert drawn == ha.sample_references(pairs, num_refs=2, seed=7)
    assert drawn != ha.sample_references(pairs, num_refs=2, seed=8)
    for pair, refs in zip(pairs, drawn):
        assert len(set(refs)) == 2 and set(refs) <= set(pair.references)
        assert list(refs) == [r for r in pair.references if r in refs]  # file order
    assert ha.sample_references(pairs, num_refs=0, seed=7) == [p.references for p in pairs]
    assert ha.sample_references(pairs, num_refs=99, seed=7) == [p.references for p in pairs]
    with pytest.raises(ValueError, match="num_refs"):
        ha.sample_references(pairs, num_refs=-1, seed=0)


@needs_java
def test_with_java_ptb_tokens_and_meteor(tmp_path):
    result = ha.evaluate_agreement(read_consensus(write_pascal50s_consensus(tmp_path)),
                                   num_refs=0, seed=0, spice=False)
    assert result["tokenizer"] == "ptb"
    assert result["accuracy"]["bleu_1"] == pytest.approx(BLEU_1, abs=1e-12)  # PTB and its fallback agree here
    assert 0.0 <= result["accuracy"]["meteor"]["all"] <= 1.0
    assert result["unavailable"] == ["spice"]


@pytest.mark.parametrize("change, message", [
    (dict(omit=("category",)), r"pair_pascal\.mat: no variable 'category'"),
    (dict(category=[1, 2, 3, 4, 1, 2, 3, 5]), r"category\(8\) is 5\.0"),
    (dict(category=[2, 2, 3, 4, 1, 2, 3, 4]), r"category\(1\) is 2 but new_data\(1,:\)"),
    (dict(triplets=pascal50s_triplets(PASCAL50S_PAIRS)[:-1]), r"'triplets' has 31 entries"),
    (dict(triplets=[("ref", "x", "y", 1.0)] + pascal50s_triplets(PASCAL50S_PAIRS)[1:]),
     r"triplets\(1\)\.B/C \('x', 'y'\) are not the sentences of pair 1"),
    (dict(triplets=[("ref", "", "y", 1.0)] + pascal50s_triplets(PASCAL50S_PAIRS)[1:]),
     r"triplets\(1\)\.B must be a non-empty string"),
    (dict(triplets=[("a dog on a rug", PASCAL50S_PAIRS[0].a, PASCAL50S_PAIRS[0].b, "x")]
          + pascal50s_triplets(PASCAL50S_PAIRS)[1:]), r"triplets\(1\)\.D must be a number"),
])
def test_bad_files_name_the_file_and_field(tmp_path, change, message):
    with pytest.raises(DatasetFormatError, match=message):
        read_consensus(write_pascal50s_consensus(tmp_path, **change))


def test_missing_or_unreadable_file(tmp_path):
    folder = write_pascal50s_consensus(tmp_path)
    (folder / "consensus_pascal.mat").unlink()
    with pytest.raises(DatasetFormatError, match=r"consensus_pascal\.mat: no such file"):
        read_consensus(folder)
    (folder / "consensus_pascal.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetFormatError, match=r"consensus_pascal\.mat: not a readable MATLAB"):
        read_consensus(folder)


def test_stage_writes_metrics_or_a_skip_record(tmp_path, no_java):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "metrics" / "pascal50s.json"
    skipped = stage.run(Pascal50sConfig(dir=str(empty), num_refs=5, seed=0), out)
    assert skipped["skipped"] is True and "neither pair_pascal.mat nor consensus_pascal.mat" in skipped["reason"]
    assert json.loads(out.read_text()) == skipped

    folder = write_pascal50s_consensus(tmp_path)
    result = stage.run(Pascal50sConfig(dir=str(folder), num_refs=0, seed=0), out)
    written = json.loads(out.read_text())
    assert written["skipped"] is False and written["accuracy"]["bleu_1"] == pytest.approx(BLEU_1, abs=1e-12)
    assert set(written["sha256"]) == {"pair_pascal.mat", "consensus_pascal.mat"}
    assert stage.tracked_metrics(result)["accuracy_bleu_1_all"] == pytest.approx(0.5625)

    (folder / "pair_pascal.mat").unlink()  # one file without the other: an error, not a skip
    with pytest.raises(DatasetFormatError, match=r"pair_pascal\.mat: no such file"):
        stage.run(Pascal50sConfig(dir=str(folder), num_refs=0, seed=0), out)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="num_refs"):
        Pascal50sConfig(dir="datasets/pascal50s", num_refs=-1, seed=0)
    with pytest.raises(ConfigError, match="pascal50s.dir"):
        Pascal50sConfig(dir="", num_refs=5, seed=0)
