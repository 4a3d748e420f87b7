"""Caption metrics against people: accuracy on Pascal-50S's judged pairs (Vedantam et al. 2015, CIDEr, §8).

For each pair of candidate captions (:mod:`components.data.pascal50s_consensus`)
the people's choice is the majority of the pair's K votes (48 in the release).
A metric scores both candidates against the same references and picks the
higher; its accuracy is the share of pairs where it picks what the people
picked, per pair kind (HC, HI, HM, MM) and over all pairs, as in the CIDEr
paper's Pascal-50S experiment (later papers report the same table).

* **References**: ``num_refs`` of the pair's K triplet references (its
  sentences A), drawn without replacement by ``numpy.random.default_rng((seed,
  pair index))`` (so a pair's draw depends on nothing else); ``num_refs`` 0 or
  at least K takes all K. The literature uses 5 and 48.
* **Tokens**: candidates and references go through the project's evaluation
  tokenizer (:func:`tokenize`: PTB with Java, the no-Java fallback of
  :mod:`components.metrics.captions` without), each distinct sentence once.
* **Scores** are sentence-level: pycocoevalcap's scorers return one score per
  item (BLEU-1..4 with its ``closest`` reference length, ROUGE-L, METEOR 1.5
  with Java, SPICE only where :func:`components.metrics.captions.spice_jars`
  are present), and CIDEr-D is :class:`components.metrics.cider.CiderD` with
  document frequencies from the whole set's references, each image counted
  once (an image's document: every reference of every pair of that image,
  all K, whatever ``num_refs`` draws).
* **Ties** (the rule, :data:`TIE_RULE`): a pair where the votes split evenly,
  or where the metric gives both candidates the same score (to a relative
  1e-12), counts half a point. That is the expected value of the coin the
  public readers flip for a human tie, without the coin; both kinds of ties
  are counted and reported.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge

from components.data.pascal50s_consensus import CATEGORIES, Consensus, JudgedPair
from components.metrics import captions
from components.metrics.cider import CiderD

log = logging.getLogger(__name__)

METRICS = captions.CAPTION_METRICS
GROUPS = (*CATEGORIES.values(), "all")
TIE_RULE = ("a human tie (votes split evenly) or a metric tie (equal scores, to a relative 1e-12) scores "
            "half a point: the expected value of a random tie break")
TIE_TOLERANCE = 1e-12


def sample_references(pairs: Sequence[JudgedPair], *, num_refs: int, seed: int) -> list[tuple[str, ...]]:
    """The references each pair is scored against.

    Args:
        pairs: The judged pairs.
        num_refs: References per pair, drawn without replacement; 0 (or at
            least a pair's count): all of them, in file order.
        seed: With the pair's index, the seed of its draw.

    Returns:
        Per pair, its drawn references in file order.
    """
    if num_refs < 0:
        raise ValueError(f"num_refs must be >= 0, got {num_refs}")
    drawn = []
    for index, pair in enumerate(pairs):
        refs = pair.references
        if num_refs == 0 or num_refs >= len(refs):
            drawn.append(tuple(refs))
            continue
        picked = np.sort(np.random.default_rng((seed, index)).choice(len(refs), size=num_refs, replace=False))
        drawn.append(tuple(refs[k] for k in picked))
    return drawn


def tokenize(sentences: Sequence[str]) -> tuple[list[str], str, str | None]:
    """The project's evaluation tokenizer, applied to each sentence (each distinct one tokenized once).

    Returns:
        The tokenized sentences (space-separated, lower case), the tokenizer's
        name (``ptb``, or ``ptb_python`` without Java, as in
        :func:`components.metrics.captions.coco_scores`) and, for the fallback, why.
    """
    unique = list(dict.fromkeys(sentences))
    batch = {i: [s] for i, s in enumerate(unique)}
    if captions.find_java():
        name, reason, done = "ptb", None, captions.ptb_tokenize(batch)
    else:  # captions.coco_scores's fallback
        name, done = "ptb_python", captions.python_ptb_tokenize(batch)
        reason = "no 'java' on PATH: the pure-Python PTB tokenizer ran instead"
    tokens = {s: done[i][0] for i, s in enumerate(unique)}
    return [tokens[s] for s in sentences], name, reason


def sentence_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], *,
                    corpus: Sequence[Sequence[str]], spice: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every caption metric of each candidate against its own references (tokenized text).

    Args:
        candidates: ``C`` tokenized sentences.
        references: ``C`` lists of tokenized references.
        corpus: Per image, its tokenized references: CIDEr-D's document frequencies.
        spice: Try SPICE (needs Java and its jars; never downloaded).

    Returns:
        Metric name -> ``(C,)`` float64 scores, for the metrics computed; and
        the reasons of those not computed.
    """
    ids = range(len(candidates))
    gts = {i: list(references[i]) for i in ids}
    res = {i: [candidates[i]] for i in ids}
    scores: dict[str, np.ndarray] = {}
    reasons: dict[str, str] = {}
    _, per_order = Bleu(4).compute_score(gts, res, verbose=0)  # 4 lists of C sentence scores
    scores.update({f"bleu_{n + 1}": np.asarray(s, dtype=np.float64) for n, s in enumerate(per_order)})
    scores["rouge_l"] = np.asarray(Rouge().compute_score(gts, res)[1], dtype=np.float64)
    cider = CiderD([[r.split() for r in refs] for refs in corpus])
    scores["cider"] = cider.scores([c.split() for c in candidates], [[r.split() for r in gts[i]] for i in ids])
    no_java = "no 'java' on PATH (install a Java runtime, e.g. openjdk-17-jre-headless)"
    java = captions.find_java()
    if java:
        scores["meteor"] = np.asarray(captions.meteor_scores(gts, res)[1], dtype=np.float64)
    else:
        reasons["meteor"] = no_java
    if not spice:
        reasons["spice"] = "not requested"
    elif not java:
        reasons["spice"] = no_java
    elif not all(p.exists() for p in captions.spice_jars()):
        reasons["spice"] = "no Stanford CoreNLP 3.6.0 jars in pycocoevalcap/spice/lib (never downloaded)"
    else:
        try:
            scores["spice"] = _spice_scores(gts, res)
        except (subprocess.CalledProcessError, OSError, ValueError) as err:  # e.g. SPICE needs Java 8
            reasons["spice"] = f"SPICE failed: {err}"
    return scores, reasons


def _spice_scores(gts: dict[int, list[str]], res: dict[int, list[str]]) -> np.ndarray:
    """SPICE F-score per id (pycocoevalcap returns them in sorted id order, which is ``gts``'s here)."""
    from pycocoevalcap.spice.spice import Spice

    _, per_item = Spice().compute_score(gts, res)
    return np.asarray([float(s["All"]["f"]) for s in per_item], dtype=np.float64)


def preferences(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """Per pair, the candidate a metric prefers: 1 (A), -1 (B), 0 (equal to a relative TIE_TOLERANCE)."""
    scale = np.maximum(1.0, np.maximum(np.abs(scores_a), np.abs(scores_b)))
    tied = np.abs(scores_a - scores_b) <= TIE_TOLERANCE * scale
    return np.where(tied, 0, np.sign(scores_a - scores_b)).astype(np.int64)


def agreement_points(humans: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """Per pair, 1 when the metric picks the people's choice, 0 when not, 0.5 when either side ties."""
    return np.where((humans == 0) | (metric == 0), 0.5, (humans == metric).astype(np.float64))


def by_group(values: np.ndarray, categories: np.ndarray, reduce: str) -> dict[str, float | int | None]:
    """``values`` (one per pair) summed or averaged per pair kind and over all (None: no pair of a kind)."""
    out: dict[str, float | int | None] = {}
    for group in GROUPS:
        chosen = values if group == "all" else values[categories == group]
        if reduce == "sum":
            out[group] = int(chosen.sum())
        else:
            out[group] = float(chosen.mean()) if chosen.size else None
    return out


def metric_choices(consensus: Consensus, *, num_refs: int, seed: int,
                   spice: bool = True) -> tuple[dict[str, np.ndarray], str, dict[str, str]]:
    """Each available metric's preference per pair (see :func:`preferences`).

    Returns:
        Metric name -> ``(P,)`` preferences; the tokenizer's name; the reasons
        of the metrics (and tokenizer fallback) not computed.
    """
    pairs = consensus.pairs
    drawn = sample_references(pairs, num_refs=num_refs, seed=seed)
    images = list(dict.fromkeys(p.image for p in pairs))
    per_image: dict[str, dict[str, None]] = {image: {} for image in images}  # insertion-ordered sets
    for pair in pairs:
        per_image[pair.image].update(dict.fromkeys(pair.references))
    corpus_text = [list(refs) for refs in per_image.values()]
    # one tokenizer call: candidates (A, B per pair), then the corpus (which holds every drawn reference)
    candidates_text = [s for pair in pairs for s in (pair.a, pair.b)]
    flat_corpus = [s for refs in corpus_text for s in refs]
    tokens, tokenizer, reason = tokenize(candidates_text + flat_corpus)
    reasons = {"ptb_tokenizer": reason} if reason else {}
    token_of = dict(zip(flat_corpus, tokens[len(candidates_text):]))
    corpus = [[token_of[s] for s in refs] for refs in corpus_text]
    references = [[token_of[s] for s in refs] for refs in drawn for _ in range(2)]  # (2P,): A's and B's
    scores, metric_reasons = sentence_scores(tokens[:len(candidates_text)], references, corpus=corpus, spice=spice)
    reasons.update(metric_reasons)
    # candidate 2i is pair i's A, 2i + 1 its B
    choices = {name: preferences(s[0::2], s[1::2]) for name, s in scores.items()}
    return choices, tokenizer, reasons


def evaluate_agreement(consensus: Consensus, *, num_refs: int, seed: int, spice: bool = True) -> dict:
    """Every caption metric's accuracy at picking the people's choice, per pair kind and overall.

    Args:
        consensus: The judged pairs (:func:`components.data.pascal50s_consensus.read_consensus`).
        num_refs: References per pair (0: all K).
        seed: Seed of the references' draw.
        spice: Try SPICE.

    Returns:
        ``accuracy`` (metric -> HC/HI/HM/MM/all -> fraction in [0, 1]; None
        for a metric not computed or a kind without pairs), ``metric_ties``
        (metric -> kind -> count), ``human_ties`` and ``n_pairs`` (kind ->
        count), ``judgements_per_pair``, ``num_refs``, ``refs_per_pair`` (the
        number used), ``seed``, ``tokenizer``, ``tie_rule``,
        ``unavailable`` and ``unavailable_reasons``.
    """
    choices, tokenizer, reasons = metric_choices(consensus, num_refs=num_refs, seed=seed, spice=spice)
    categories = np.array([p.category for p in consensus.pairs])
    humans = np.array([p.human_choice for p in consensus.pairs], dtype=np.int64)
    accuracy: dict[str, dict | None] = dict.fromkeys(METRICS)
    metric_ties: dict[str, dict | None] = dict.fromkeys(METRICS)
    for name, picked in choices.items():
        accuracy[name] = by_group(agreement_points(humans, picked), categories, "mean")
        metric_ties[name] = by_group((picked == 0).astype(np.int64), categories, "sum")
    unavailable = [m for m in METRICS if accuracy[m] is None]
    for name in unavailable:
        log.warning("Pascal-50S: %s not computed: %s", name, reasons[name])
    k = consensus.judgements_per_pair
    return {
        "accuracy": accuracy,
        "metric_ties": metric_ties,
        "human_ties": by_group((humans == 0).astype(np.int64), categories, "sum"),
        "n_pairs": by_group(np.ones(len(humans), dtype=np.int64), categories, "sum"),
        "judgements_per_pair": k,
        "num_refs": num_refs,
        "refs_per_pair": k if num_refs == 0 else min(num_refs, k),
        "seed": seed,
        "tokenizer": tokenizer,
        "tie_rule": TIE_RULE,
        "unavailable": unavailable,
        "unavailable_reasons": reasons,
    }
