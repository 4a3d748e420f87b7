"""CIDEr-D in-process, vectorised, with document frequencies fixed once (the SCST reward).

The formula is coco-caption's ``Cider`` scorer (pycocoevalcap's
``cider_scorer.py``, which is CIDEr-D: Vedantam et al. 2015 with the clipped
term frequencies and the Gaussian length penalty, sigma = 6):

* a sentence is its 1- to 4-gram counts, weighted ``tf * (log N - log max(1, df))``
  where ``df`` counts the images whose references hold the n-gram and ``N``
  is the number of images;
* per order ``n``, ``sum_g min(h_g, r_g) * r_g / (|h_n| |r_n|)`` (the cosine
  with the candidate's weights clipped by the reference's), times
  ``exp(-(l_h - l_r)^2 / (2 sigma^2))`` where ``l`` counts a sentence's bigrams
  (coco-caption's length: words - 1);
* averaged over the orders and the image's references, times 10.

coco-caption computes ``df`` from the references of the sentences it scores.
Self-critical training (Rennie et al. 2017) instead fixes it from the training
references once, so that a batch's reward does not depend on which images are
in the batch: :class:`CiderD` takes that corpus at construction. With the
scored references as the corpus it equals pycocoevalcap to 1e-9
(``tests/unit/test_metrics_cider.py``).

Vectorised: per n-gram order, the candidates' and references' weights are
sparse matrices (one row per (candidate, reference) pair), and the clipped dot
products are one ``minimum``, one ``multiply`` and one row sum; no Java, no
subprocess. Tokens are any hashable items: words, or vocabulary ids.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
from scipy import sparse

Tokens = Sequence[Hashable]


def ngram_counts(tokens: Tokens, n: int = 4) -> Counter:
    """Counts of the 1- to ``n``-grams of one sentence, as tuples."""
    tokens = tuple(tokens)
    return Counter(tokens[i:i + k] for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


class CiderD:
    """CIDEr-D with the document frequencies of a fixed reference corpus.

    Args:
        corpus: The references of each image of the corpus (training captions
            for SCST): one sequence of token sequences per image.
        n: Highest n-gram order.
        sigma: Width of the Gaussian length penalty.
    """

    def __init__(self, corpus: Iterable[Sequence[Tokens]], *, n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        df: Counter = Counter()
        images = 0
        for refs in corpus:
            images += 1
            df.update({g for ref in refs for g in ngram_counts(ref, n)})
        if images == 0:
            raise ValueError("CIDEr-D needs a reference corpus of at least one image")
        self.num_images = images
        self._log_images = math.log(float(images))
        self._df = df
        self._columns: list[dict[tuple, int]] = [{} for _ in range(n)]  # per order: n-gram -> column

    def _idf(self, gram: tuple) -> float:
        return self._log_images - math.log(max(1.0, self._df.get(gram, 0.0)))

    def _weights(self, sentences: Sequence[Tokens]) -> tuple[list[sparse.csr_matrix], np.ndarray, np.ndarray]:
        """Per order, the ``(len(sentences), columns)`` tf-idf matrix; norms ``(S, n)``; lengths ``(S,)``."""
        rows: list[list[int]] = [[] for _ in range(self.n)]
        cols: list[list[int]] = [[] for _ in range(self.n)]
        vals: list[list[float]] = [[] for _ in range(self.n)]
        lengths = np.zeros(len(sentences))
        for i, tokens in enumerate(sentences):
            for gram, tf in ngram_counts(tokens, self.n).items():
                order = len(gram) - 1
                column = self._columns[order].setdefault(gram, len(self._columns[order]))
                rows[order].append(i)
                cols[order].append(column)
                vals[order].append(tf * self._idf(gram))
                if order == 1:  # coco-caption's length: the number of bigrams
                    lengths[i] += tf
        matrices, norms = [], np.zeros((len(sentences), self.n))
        for order in range(self.n):
            m = sparse.csr_matrix((vals[order], (rows[order], cols[order])),
                                  shape=(len(sentences), len(self._columns[order])))
            matrices.append(m)
            norms[:, order] = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        return matrices, norms, lengths

    def scores(self, candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> np.ndarray:
        """CIDEr-D of each candidate against the references of its image.

        Args:
            candidates: ``C`` token sequences.
            references: ``C`` sequences of reference token sequences (the same
                object may be passed for the K samples of one image; a
                sentence repeated anywhere is weighted once).

        Returns:
            np.ndarray: ``(C,)`` float64 scores (0 for an empty candidate).
        """
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
        if any(len(refs) == 0 for refs in references):
            raise ValueError("every candidate needs at least one reference")
        owner = np.repeat(np.arange(len(candidates)), [len(refs) for refs in references])  # pair -> candidate
        # each distinct reference weighted once; ``which`` (pairs,) is its row
        distinct: dict[tuple, int] = {}
        which = np.fromiter((distinct.setdefault(tuple(ref), len(distinct)) for refs in references for ref in refs),
                            dtype=np.int64, count=len(owner))
        hyp, hyp_norm, hyp_len = self._weights(candidates)
        ref, ref_norm, ref_len = self._weights(list(distinct))
        ref_norm, ref_len = ref_norm[which], ref_len[which]
        penalty = np.exp(-((hyp_len[owner] - ref_len) ** 2) / (2 * self.sigma**2))
        per_pair = np.zeros(len(owner))
        for order in range(self.n):
            columns = len(self._columns[order])  # both matrices to the same width (new n-grams added late)
            h = hyp[order]
            h = sparse.csr_matrix((h.data, h.indices, h.indptr), shape=(h.shape[0], columns))[owner]
            r = ref[order]
            r = sparse.csr_matrix((r.data, r.indices, r.indptr), shape=(r.shape[0], columns))[which]
            clipped = np.asarray(h.minimum(r).multiply(r).sum(axis=1)).ravel()
            denom = hyp_norm[owner, order] * ref_norm[:, order]
            value = np.divide(clipped, denom, out=clipped.copy(), where=denom != 0)
            per_pair += value * penalty
        per_candidate = np.bincount(owner, weights=per_pair, minlength=len(candidates))
        counts = np.array([len(refs) for refs in references], dtype=np.float64)
        return per_candidate / self.n / counts * 10.0
