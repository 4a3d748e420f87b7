"""Registry of dataset loaders: a dataset name to the function that reads it.

Every loader has the signature
``loader(sources: Sequence[AnnotationSource], *, split_file: str | None = None)
-> SourceDataset`` and only builds paths; ``prepare`` opens the images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from components.data.coco import load_coco
from components.data.karpathy import load_karpathy
from components.data.pascal50s import load_pascal50s
from components.data.schema import SourceDataset
from components.data.sources import AnnotationSource

Loader = Callable[..., SourceDataset]

LOADERS: dict[str, Loader] = {
    "coco": load_coco,
    "flickr8k": load_karpathy,
    "flickr30k": load_karpathy,
    "karpathy": load_karpathy,
    "pascal50s": load_pascal50s,
}


def load_dataset(
    name: str, sources: Sequence[AnnotationSource], *, split_file: str | None = None
) -> SourceDataset:
    """Load dataset ``name`` from its annotation files.

    Args:
        name: A key of :data:`LOADERS`; also the returned dataset's name.
        sources: The annotation files and their image folders.
        split_file: Karpathy's split file, for ``coco`` only.

    Raises:
        ValueError: ``name`` is not a known dataset (the message lists them).
        DatasetFormatError: From the loader.
    """
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown dataset {name!r}; choose one of: {', '.join(sorted(LOADERS))}"
        ) from None
    dataset = loader(sources, split_file=split_file)
    return dataclasses.replace(dataset, name=name)
