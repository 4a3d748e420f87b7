"""Caption scores through pycocoevalcap's own scorers, called one by one.

``COCOEvalCap.evaluate()`` is not used: it always builds SPICE, which
downloads Stanford CoreNLP. The scorers take ``{id: [caption, ...]}`` dicts of
already tokenized, space-separated lower-case text. :func:`quick_scores` is
for text that is already normalized (our own predictions and references,
``components.data.text.tokenize``): BLEU and CIDEr-D are pure Python, no Java.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider


def quick_scores(predictions: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D of normalized captions (no tokenizer, no Java).

    Args:
        predictions: image id → one generated caption.
        references: image id → its reference captions (same ids).

    Returns:
        ``bleu_1`` .. ``bleu_4`` and ``cider`` (corpus level, as in COCO).
    """
    ids = sorted(predictions)
    if not ids:
        raise ValueError("no predictions to score")
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"image {missing[0]} has a prediction but no reference")
    res = {i: [predictions[i]] for i in ids}
    gts = {i: list(references[i]) for i in ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}, "cider": float(cider)}
