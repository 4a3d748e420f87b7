"""Session.end_epoch: the one way every training loop closes an epoch."""

from __future__ import annotations

from components.train.session import LocalSession


class _Logger:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.calls.append((metrics, step))


def _close(session: LocalSession, logger: _Logger) -> tuple[dict, list[dict]]:
    state = {"epoch": -1, "history": [], "weights": 7}
    built: list[dict] = []

    def checkpoint() -> dict:
        snapshot = {**state, "history": list(state["history"])}
        built.append(snapshot)
        return snapshot

    session.end_epoch(state, {"epoch": 3, "loss": 0.5, "epoch_start_time": 1e9}, logger=logger,
                      checkpoint=checkpoint)
    return state, built


def test_end_epoch_records_the_epoch_before_the_checkpoint_and_reports_it():
    session, logger = LocalSession(), _Logger()
    state, built = _close(session, logger)

    assert state["epoch"] == 3 and state["history"] == [{"epoch": 3, "loss": 0.5, "epoch_start_time": 1e9}]
    # the checkpoint holds the finished epoch, so a restart resumes after it
    assert len(built) == 1 and built[0]["epoch"] == 3 and len(built[0]["history"]) == 1
    assert session.restore() is built[0]
    assert session.history == [{"epoch": 3, "loss": 0.5, "epoch_start_time": 1e9}]
    # the logger gets curves only: no step column, no wall-clock stamp
    assert logger.calls == [({"loss": 0.5}, 3)]


def test_end_epoch_on_other_ranks_reports_without_logging_or_checkpointing():
    session, logger = LocalSession(), _Logger()
    session.rank, session.world_size = 1, 2
    state, built = _close(session, logger)

    assert state["epoch"] == 3 and len(state["history"]) == 1
    assert built == [] and logger.calls == []
    assert session.restore() is None
    assert [m["epoch"] for m in session.history] == [3]
