"""``capsynth runs``: list the run folders and prune all but the newest per family."""

from __future__ import annotations

import os

from pipelines import runs


def _run(storage, name: str, mtime: float) -> None:
    (storage / name / "epoch-0000").mkdir(parents=True)
    (storage / name / "epoch-0000" / "state.pt").write_bytes(b"x" * 10)
    os.utime(storage / name, (mtime, mtime))


def test_keep_prunes_all_but_the_newest_of_each_family(tmp_path, capsys):
    storage = tmp_path / "ray_results"
    for i, name in enumerate(["vae-aaaaaaaaaaaa", "vae-bbbbbbbbbbbb", "vae-cccccccccccc", "gan-dddddddddddd"]):
        _run(storage, name, 1000.0 + i)
    (storage / "sweep-x").mkdir()  # no checkpoints: not a run folder, left alone
    runs.main(["--storage", str(storage)])
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in listed] == ["gan-dddddddddddd", "vae-cccccccccccc", "vae-bbbbbbbbbbbb",
                                                        "vae-aaaaaaaaaaaa"]
    runs.main(["--storage", str(storage), "--keep", "1"])
    assert sorted(p.name for p in storage.iterdir()) == ["gan-dddddddddddd", "sweep-x", "vae-cccccccccccc"]
