"""Caption scores through pycocoevalcap's own scorers, called one by one.

``COCOEvalCap.evaluate()`` is not used: it always builds SPICE, which
downloads Stanford CoreNLP. The scorers take ``{id: [caption, ...]}`` dicts of
already tokenized, space-separated lower-case text.

* :func:`quick_scores` is for text that is already tokenized (our own
  predictions and references, the prepare stage's PTB tokens): BLEU and
  CIDEr-D are pure Python, no Java. The training stage uses it per epoch.
* :func:`coco_scores` is the evaluation: raw captions are tokenized with
  pycocoevalcap's PTB tokenizer (Stanford CoreNLP 3.4.1, bundled, needs Java),
  then BLEU-1..4, METEOR (Java), ROUGE-L, CIDEr-D and, only when Stanford
  CoreNLP 3.6.0's jars are already in pycocoevalcap's ``spice/lib`` folder,
  SPICE (Java). Nothing is downloaded. A metric that cannot be computed is
  ``None`` and listed in ``unavailable`` with its reason; without Java the
  text is tokenized by the pure-Python PTB tokenizer
  (:func:`components.data.ptb.ptb_tokenize`, the same tokens on captions;
  recorded as ``tokenizer: "ptb_python"``), so BLEU/ROUGE-L/CIDEr-D are the
  PTB numbers; METEOR and SPICE stay unavailable.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pycocoevalcap
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice.get_stanford_models import JAR as SPICE_CORENLP_JAR
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from components.data.ptb import ptb_tokenize as python_ptb_tokens
from components.data.text import tokenize

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(next(iter(pycocoevalcap.__path__)))
# SPICE's CoreNLP jars: pycocoevalcap's get_stanford_models() would download them here
SPICE_LIB = PACKAGE_DIR / "spice" / "lib"
CAPTION_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "spice")


def _check(predictions: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> list[int]:
    """Sorted ids; raise when there is nothing to score or an id lacks references."""
    ids = sorted(predictions)
    if not ids:
        raise ValueError("no predictions to score")
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"image {missing[0]} has a prediction but no reference")
    return ids


def quick_scores(predictions: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D of normalized captions (no tokenizer, no Java).

    Args:
        predictions: image id → one generated caption.
        references: image id → its reference captions (same ids).

    Returns:
        ``bleu_1`` .. ``bleu_4`` and ``cider`` (corpus level, as in COCO).
    """
    ids = _check(predictions, references)
    res = {i: [predictions[i]] for i in ids}
    gts = {i: list(references[i]) for i in ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}, "cider": float(cider)}


def find_java() -> str | None:
    """The ``java`` executable on PATH, or None (METEOR, SPICE and the PTB tokenizer need it)."""
    return shutil.which("java")


def spice_jars() -> list[Path]:
    """The Stanford CoreNLP jars SPICE needs (present or not) in pycocoevalcap's ``spice/lib``."""
    return [SPICE_LIB / f"{SPICE_CORENLP_JAR}.jar", SPICE_LIB / f"{SPICE_CORENLP_JAR}-models.jar"]


def ptb_tokenize(captions: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """pycocoevalcap's PTB tokenization (lower case, punctuation removed); needs Java."""
    return PTBTokenizer().tokenize({i: [{"caption": c} for c in caps] for i, caps in captions.items()})


def python_ptb_tokenize(captions: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """The no-Java fallback: :func:`ptb_tokenize`'s tokens from the pure-Python PTB tokenizer."""
    return {i: [" ".join(python_ptb_tokens(c)) for c in caps] for i, caps in captions.items()}


def simple_tokenize(captions: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """The no-Java fallback: ``components.data.text.tokenize`` (lower case, ASCII words)."""
    return {i: [" ".join(tokenize(c)) for c in caps] for i, caps in captions.items()}


def meteor_score(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """pycocoevalcap's METEOR of the corpus (see :func:`meteor_scores`)."""
    return meteor_scores(gts, res)[0]


def meteor_scores(gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, list[float]]:
    """pycocoevalcap's METEOR: the corpus score and one score per id (in ``gts`` order).

    Its Java process ends here, all three pipes closed: ``Meteor.__del__``
    closes only the process's stdin, so every call would leak two pipe
    handles (a ``ResourceWarning``) until the interpreter exits.
    """
    meteor = Meteor()
    try:
        score, per_item = meteor.compute_score(gts, res)
        return float(score), [float(s) for s in per_item]
    finally:
        proc = meteor.meteor_p
        with meteor.lock:
            proc.stdin.close()
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def _spice(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """SPICE F-score; only called when its jars are present (its constructor would download them)."""
    from pycocoevalcap.spice.spice import Spice

    score, _ = Spice().compute_score(gts, res)
    return float(score)


def coco_scores(predictions: Mapping[int, str], references: Mapping[int, Sequence[str]], *,
                spice: bool = True) -> dict:
    """The COCO caption metrics of raw captions, each scorer called directly.

    Args:
        predictions: image id → one generated caption (raw text).
        references: image id → its reference captions (raw text: any case, punctuation).
        spice: Try SPICE (when its jars and Java are present).

    Returns:
        ``bleu_1`` .. ``bleu_4``, ``meteor``, ``rouge_l``, ``cider`` (CIDEr-D),
        ``spice`` (floats; None when not computed), ``unavailable`` (the
        metric names not computed), ``unavailable_reasons`` (name → reason),
        ``tokenizer`` (``ptb``: Java; ``ptb_python``: without Java) and ``n_images``.
    """
    ids = _check(predictions, references)
    java = find_java()
    reasons: dict[str, str] = {}
    no_java = "no 'java' on PATH (install a Java runtime, e.g. openjdk-17-jre-headless)"
    if java:
        tokenizer, tok = "ptb", ptb_tokenize
    else:
        tokenizer, tok = "ptb_python", python_ptb_tokenize
        reasons["ptb_tokenizer"] = f"{no_java}: the pure-Python PTB tokenizer ran instead"
    gts = tok({i: list(references[i]) for i in ids})
    res = tok({i: [predictions[i]] for i in ids})
    scores: dict = dict.fromkeys(CAPTION_METRICS)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    scores["cider"] = float(Cider().compute_score(gts, res)[0])
    if java:
        scores["meteor"] = meteor_score(gts, res)
    else:
        reasons["meteor"] = no_java
    missing = [p.name for p in spice_jars() if not p.exists()]
    if not spice:
        reasons["spice"] = "not requested"
    elif not java:
        reasons["spice"] = no_java
    elif missing:
        reasons["spice"] = "no Stanford CoreNLP 3.6.0 jars in pycocoevalcap/spice/lib (never downloaded)"
        log.info("SPICE needs %s in %s", " and ".join(missing), SPICE_LIB)
    else:
        try:
            scores["spice"] = _spice(gts, res)
        except (subprocess.CalledProcessError, OSError, ValueError) as err:  # e.g. SPICE needs Java 8
            reasons["spice"] = f"SPICE failed: {err}"
    unavailable = [m for m in CAPTION_METRICS if scores[m] is None]
    for name in unavailable:
        log.warning("caption metric %s not computed: %s", name, reasons[name])
    return {**scores, "unavailable": unavailable, "unavailable_reasons": reasons,
            "tokenizer": tokenizer, "n_images": len(ids)}
