"""Cached features + prepared captions → arrays a caption model trains on."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow.parquet as pq

from components.data.folders import PreparedDir
from components.data.text import Vocab
from components.features.store import FeatureSet, load_features


@dataclasses.dataclass(frozen=True)
class SplitCaptions:
    """The captions of one split, aligned with the feature rows.

    Attributes:
        image_ids: (N_s,) the split's image ids, ascending.
        image_rows: (N_s,) their rows in the feature arrays.
        caption_rows: (M,) feature row of each caption.
        token_ids: (M, L) ``<start> .. <end>`` ids right-padded with 0.
        references: image id → its normalized reference captions.
    """

    image_ids: np.ndarray
    image_rows: np.ndarray
    caption_rows: np.ndarray
    token_ids: np.ndarray
    references: dict[int, list[str]]


@dataclasses.dataclass(frozen=True)
class CaptionData:
    features: FeatureSet
    vocab: Vocab
    splits: dict[str, SplitCaptions]

    @property
    def feature_dim(self) -> int:
        return int(self.features.grid.shape[2])

    @property
    def num_positions(self) -> int:
        return int(self.features.grid.shape[1])


def load_caption_data(features_dir: str | os.PathLike, prepared_dir: str | os.PathLike) -> CaptionData:
    """Join ``captions.parquet`` with the feature rows; one :class:`SplitCaptions` per split.

    Raises:
        KeyError: a captioned image has no features (the features are stale).
    """
    prepared = PreparedDir(prepared_dir)
    features = load_features(features_dir)
    vocab = Vocab.load(prepared.vocab)
    table = pq.read_table(prepared.captions, columns=["image_id", "split", "caption", "token_ids"]).to_pydict()
    splits = {}
    for split in ("train", "val", "test"):
        idx = [i for i, s in enumerate(table["split"]) if s == split]
        if not idx:
            continue
        image_id = np.asarray([table["image_id"][i] for i in idx], dtype=np.int64)
        lengths = [len(table["token_ids"][i]) for i in idx]
        tokens = np.zeros((len(idx), max(lengths)), dtype=np.int64)
        references: dict[int, list[str]] = {}
        for row, i in enumerate(idx):
            ids = table["token_ids"][i]
            tokens[row, : len(ids)] = ids
            references.setdefault(int(table["image_id"][i]), []).append(table["caption"][i])
        unique_ids = np.asarray(sorted(references), dtype=np.int64)
        splits[split] = SplitCaptions(
            image_ids=unique_ids,
            image_rows=features.rows(unique_ids),
            caption_rows=features.rows(image_id),
            token_ids=tokens,
            references=references,
        )
    return CaptionData(features=features, vocab=vocab, splits=splits)
