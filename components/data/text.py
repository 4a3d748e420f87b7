"""Caption text: the legacy normalizer, ASCII folding and the vocabulary.

The vocabulary's tokens come from the PTB tokenizer the caption metrics use
(:mod:`components.data.ptb`, ``prepare.tokenizer: ptb``), each folded to ASCII
by :func:`to_ascii`. :func:`tokenize` is the old rule, kept as
``prepare.tokenizer: simple``: Unicode is folded to ASCII by NFKD
decomposition with combining marks dropped (``"café" -> "cafe"``); characters
with no ASCII form are removed; the text is lower-cased; every run of
characters other than ``a-z``, ``0-9`` becomes a single space (``man's`` ->
``man s``, ``t-shirt`` -> ``t shirt``). The tokens are the words of the
result. On the synthetic captions both rules give the same tokens.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)  # ids 0, 1, 2, 3

_NON_WORD = re.compile(r"[^a-z0-9]+")


def to_ascii(text: str) -> str:
    """Fold ``text`` to ASCII: accents dropped, other non-ASCII removed."""
    decomposed = unicodedata.normalize("NFKD", text)
    return decomposed.encode("ascii", "ignore").decode("ascii")


def tokenize(text: str) -> list[str]:
    """The legacy normalizer's word tokens of a caption (see the module docstring)."""
    return _NON_WORD.sub(" ", to_ascii(text).lower()).split()


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Token <-> id mapping. Ids 0..3 are ``<pad> <start> <end> <unk>``.

    Built from the training split only: words seen at least ``min_word_count``
    times, ordered by decreasing count then alphabetically (deterministic).
    """

    tokens: tuple[str, ...]
    min_word_count: int
    max_caption_length: int

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"vocab must start with {SPECIAL_TOKENS}")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        return self._index.get(token, self.unk_id)  # type: ignore[attr-defined]

    def encode(self, words: Sequence[str]) -> list[int]:
        """``<start> w1..wn <end>`` ids, words cut to ``max_caption_length``."""
        words = list(words)[: self.max_caption_length]
        return [self.start_id, *(self.id(w) for w in words), self.end_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of ``ids`` up to the first ``<end>``, specials dropped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.tokens[i])
        return " ".join(words)

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], *, min_word_count: int,
              max_caption_length: int) -> Vocab:
        counts = collections.Counter(w for words in captions for w in words)
        words = sorted((w for w, c in counts.items() if c >= min_word_count),
                       key=lambda w: (-counts[w], w))
        return cls(tokens=SPECIAL_TOKENS + tuple(words), min_word_count=min_word_count,
                   max_caption_length=max_caption_length)

    def to_json(self) -> dict:
        return {
            "tokens": list(self.tokens),
            "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
            "min_word_count": self.min_word_count,
            "max_caption_length": self.max_caption_length,
        }

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        return cls(tokens=tuple(data["tokens"]), min_word_count=data["min_word_count"],
                   max_caption_length=data["max_caption_length"])

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        with open(path) as f:
            return cls.from_json(json.load(f))
