"""DVC-tracked inputs as MLflow datasets: the runs table's Dataset column, from ``dvc.lock``.

A stage's data inputs are the ``deps`` in ``dvc.yaml`` that another stage
outputs (``data/prepared``, ``data/features``, ``models/captioner``...); code
deps are left out. For each, the stage run logs an MLflow dataset input:

``name``    the DVC path (``data/prepared``);
``digest``  the md5 DVC recorded for it in ``dvc.lock`` (as the producing
            stage's output; ``.dir`` dropped): two runs on different data show
            different digests;
``source``  type ``dvc``: the path, the producing stage, the git revision of
            the workspace, and the DVC remote's URL when one is configured
            (``dvc get``/``dvc pull`` find the data from these);
``profile`` what can be read cheaply from the data: DVC's size and file count,
            and per kind of folder the row counts by split (the prepared
            images table) or the features' shape (their ``meta.json``).

``dvc repro`` writes a stage's ``dvc.lock`` entry as soon as it finishes, so
when a stage starts, its inputs' entries describe the data on disk. A stage run
by hand (``python -m pipelines.train``) after the data changed outside DVC
would log the last recorded digest: the digest is DVC's record, not a hash
computed here.
"""

from __future__ import annotations

import configparser
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

log = logging.getLogger(__name__)

SOURCE_TYPE = "dvc"


def _source_class():
    """A ``DatasetSource`` subclass for DVC paths (defined lazily: MLflow is imported only when logging)."""
    from mlflow.data.dataset_source import DatasetSource

    class DVCDatasetSource(DatasetSource):
        """Where DVC keeps one path: ``{path, stage, rev, remote}``."""

        def __init__(self, path: str, stage: str, rev: str, remote: str | None):
            self.path, self.stage, self.rev, self.remote = path, stage, rev, remote

        @staticmethod
        def _get_source_type() -> str:
            return SOURCE_TYPE

        def load(self, **kwargs) -> str:
            raise NotImplementedError(f"fetch it with: dvc get . {self.path} --rev {self.rev}")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any):
            raise NotImplementedError

        def to_dict(self) -> dict[str, Any]:
            return {"path": self.path, "stage": self.stage, "rev": self.rev, "remote": self.remote}

        @classmethod
        def from_dict(cls, source_dict: Mapping[str, Any]):
            return cls(**source_dict)

    return DVCDatasetSource


def _dataset_class():
    """``MetaDataset`` with a profile (MLflow shows a dataset's ``profile`` beside its schema)."""
    from mlflow.data.meta_dataset import MetaDataset

    class DVCDataset(MetaDataset):
        def __init__(self, source, name: str, digest: str, profile: Mapping[str, Any]):
            self._profile = dict(profile)
            super().__init__(source=source, name=name, digest=digest)

        @property
        def profile(self) -> dict[str, Any]:
            return self._profile

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self._profile, sort_keys=True)}

    return DVCDataset


def stage_inputs(stage: str, root: str | Path = ".") -> list[dict[str, Any]]:
    """The DVC-tracked data inputs of ``stage``: ``{path, md5, size, nfiles, producer}`` each.

    Read from ``dvc.yaml`` (the stage's deps, ``${...}`` variables resolved
    from its ``vars``) and ``dvc.lock`` (the producing stage's outs). Empty
    when either file or the stage is missing (a stage run outside a DVC
    project), or when no dep is another stage's output.
    """
    root = Path(root)
    if not (root / "dvc.yaml").is_file() or not (root / "dvc.lock").is_file():
        return []
    yaml = YAML(typ="safe")
    spec = yaml.load(root / "dvc.yaml") or {}
    lock = yaml.load(root / "dvc.lock") or {}
    deps = [_resolve_vars(str(d), spec.get("vars") or []) for d in (spec.get("stages", {}).get(stage) or {}).get(
        "deps", [])]
    produced = {}
    for producer, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            produced[out["path"]] = {**out, "producer": producer}
    found = []
    for dep in deps:
        out = produced.get(dep.rstrip("/"))
        if out is None or out["producer"] == stage:
            continue
        found.append({"path": out["path"], "md5": str(out.get("md5", "")).removesuffix(".dir"),
                      "size": out.get("size"), "nfiles": out.get("nfiles"), "producer": out["producer"]})
    return found


def _resolve_vars(text: str, vars_: list[Any]) -> str:
    """``${paths.prepared}`` -> ``data/prepared`` from ``dvc.yaml``'s inline ``vars`` dicts."""
    for block in vars_:
        if not isinstance(block, dict):
            continue
        for group, values in block.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    text = text.replace(f"${{{group}.{key}}}", str(value))
            else:
                text = text.replace(f"${{{group}}}", str(values))
    return text


def dvc_remote_url(root: str | Path = ".") -> str | None:
    """The URL of the default DVC remote (``core.remote``), from ``.dvc/config`` and ``config.local``."""
    parser = configparser.ConfigParser()
    parser.read([Path(root) / ".dvc" / "config", Path(root) / ".dvc" / "config.local"])
    name = parser.get("core", "remote", fallback=None)
    if not name:
        return None
    return parser.get(f"'remote \"{name}\"'", "url", fallback=None) or parser.get(f'remote "{name}"', "url",
                                                                                    fallback=None)


def profile(path: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Cheap facts about one input: DVC's size and file count, then what its kind of folder tells."""
    found: dict[str, Any] = {k: entry[k] for k in ("size", "nfiles") if entry.get(k) is not None}
    images = path / "images.parquet"
    if images.is_file():  # the prepared dataset: images by split
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        splits = pq.read_table(images, columns=["split"]).column("split")
        counts = pc.value_counts(splits).to_pylist()
        found["num_rows"] = len(splits)
        found["splits"] = {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}
    meta = path / "meta.json"
    if meta.is_file():  # features (or any folder with a meta.json): its shape
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError):
            record = {}
        for key in ("num_images", "backbone", "grid_size", "channels", "dtype"):
            if key in record:
                found[key] = record[key]
    return found


def log_stage_inputs(stage: str, rev: str, root: str | Path = ".") -> list[str]:
    """Log ``stage``'s DVC-tracked inputs as dataset inputs of the active MLflow run; their paths.

    Never fatal: a dataset that cannot be described or logged costs a warning.
    """
    import mlflow

    try:
        entries, remote = stage_inputs(stage, root), dvc_remote_url(root)
    except Exception as err:  # noqa: BLE001 - an unreadable dvc.yaml / dvc.lock must not stop the stage
        log.warning("could not read the DVC inputs of %s: %s", stage, err)
        return []
    source_cls, dataset_cls = _source_class(), _dataset_class()
    logged = []
    for entry in entries:
        try:
            dataset = dataset_cls(source_cls(entry["path"], entry["producer"], rev, remote), name=entry["path"],
                                  digest=entry["md5"], profile=profile(Path(root) / entry["path"], entry))
            mlflow.log_input(dataset, context=stage)
            logged.append(entry["path"])
        except Exception as err:  # noqa: BLE001 - the record of an input must not stop the stage
            log.warning("could not log %s as an MLflow dataset of %s: %s", entry["path"], stage, err)
    return logged

