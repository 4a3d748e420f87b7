"""Where a real dataset is: the items of ``prepare.sources`` in ``params.yaml``.

A leaf module (no pyarrow, no loaders), so that loading ``params.yaml`` (and
``capsynth --help``) stays light.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AnnotationSource:
    """One annotation file of a real dataset and the folder its images are in.

    ``split`` is used for every image of the file unless the file itself says
    (Karpathy's ``dataset_*.json``) or a split file is given (COCO).
    """

    file: str
    images_dir: str
    split: str = "train"


__all__ = ["AnnotationSource"]
