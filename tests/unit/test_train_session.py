"""Session.end_epoch: the one way every training loop closes an epoch; LocalSession's checkpoints."""

from __future__ import annotations

import torch

from components.train.session import LocalSession, derive_seed


def _close(session: LocalSession) -> tuple[dict, list[dict]]:
    state = {"epoch": -1, "history": [], "weights": 7}
    built: list[dict] = []

    def checkpoint() -> dict:
        snapshot = {**state, "history": list(state["history"])}
        built.append(snapshot)
        return snapshot

    session.end_epoch(state, {"epoch": 3, "loss": 0.5, "epoch_start_time": 1e9}, checkpoint=checkpoint)
    return state, built


def test_end_epoch_records_the_epoch_before_the_checkpoint_and_reports_it():
    session = LocalSession()
    state, built = _close(session)

    assert state["epoch"] == 3 and state["history"] == [{"epoch": 3, "loss": 0.5, "epoch_start_time": 1e9}]
    # the checkpoint holds the finished epoch, so a restart resumes after it
    assert len(built) == 1 and built[0]["epoch"] == 3 and len(built[0]["history"]) == 1
    assert session.restore() == built[0]
    assert session.history == [{"epoch": 3, "loss": 0.5, "epoch_start_time": 1e9}]


def test_end_epoch_on_other_ranks_reports_without_checkpointing():
    session = LocalSession()
    session.rank, session.world_size = 1, 2
    state, built = _close(session)

    assert state["epoch"] == 3 and len(state["history"]) == 1
    assert built == []
    assert session.restore() is None
    assert [m["epoch"] for m in session.history] == [3]


def test_local_checkpoint_is_a_copy_not_the_live_weights():
    session = LocalSession()
    weights = torch.zeros(3)
    session.report({"loss": 1.0}, {"w": weights}, epoch=0)
    weights += 1  # training goes on after the report
    assert torch.equal(session.restore()["w"], torch.zeros(3))


def test_derived_seeds_differ_per_part_and_repeat_per_call():
    assert derive_seed(1, 0, 5) == derive_seed(1, 0, 5)
    assert len({derive_seed(1, 0, 5), derive_seed(1, 1, 5), derive_seed(1, 0, 6), derive_seed(2, 0, 5)}) == 4
    assert 0 <= derive_seed(7) < 2**63
