"""``capsynth runs``: list the Ray Train run folders of the project, and prune old ones.

    capsynth runs [--storage ray_results]            one line per run: name, checkpoints, size, age
    capsynth runs --keep 2 [--storage ray_results]   keep the 2 newest runs of each family, delete the rest

A run folder is ``<storage>/<family>-<hash of code, params and data>``; every
code or params change makes a new one, so they pile up. Deleting one only
means an identical run would train from scratch instead of resuming. A
relative ``--storage`` is taken from the project root, where every way of
running (``dvc repro``, ``dvc exp run --temp`` / ``--queue``) keeps them.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from components import workspace


def run_folders(storage: Path) -> list[Path]:
    """Run folders (``<family>-<12 hex>``, holding ``epoch-*`` checkpoints), newest first."""
    found = [p for p in storage.glob("*-*") if p.is_dir() and any(p.glob("epoch-*"))]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def to_prune(folders: list[Path], keep: int) -> list[Path]:
    """All but the ``keep`` newest folders of each family (the name before the last ``-``)."""
    seen: dict[str, int] = {}
    out = []
    for folder in folders:  # newest first
        family = folder.name.rsplit("-", 1)[0]
        seen[family] = seen.get(family, 0) + 1
        if seen[family] > keep:
            out.append(folder)
    return out


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capsynth runs", description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="ray_results")
    parser.add_argument("--keep", type=int, default=None, metavar="N",
                        help="delete all but the N newest runs of each family")
    args = parser.parse_args(argv)
    storage = Path(workspace.resolve(args.storage))
    folders = run_folders(storage)
    if args.keep is not None:
        if args.keep < 0:
            parser.error("--keep must be >= 0")
        for folder in to_prune(folders, args.keep):
            shutil.rmtree(folder)
            print(f"deleted {folder}")
        return
    now = time.time()
    for folder in folders:
        checkpoints = len(list(folder.glob("epoch-*")))
        age_h = (now - folder.stat().st_mtime) / 3600
        print(f"{folder.name}\t{checkpoints} checkpoint(s)\t{_size(folder) / 1e6:.1f} MB\t{age_h:.1f} h ago")
    if not folders:
        print(f"no run folders under {storage}")


if __name__ == "__main__":
    main()
