"""Run by test_multinode.py in a process of its own: a 2-node Ray cluster on this machine, 2 DDP workers.

    python tests/integration/multinode_run.py captioner|gan|gan-node-kill WORK_DIR

``ray.cluster_utils.Cluster`` starts a head and a second node (1 CPU each), so
the two 1-CPU Ray Train workers land on different nodes. The smoke data is
prepared in WORK_DIR, the family is trained through the stages' own trainer
factory with a hook that checks every rank's weights after its first steps,
and the per-epoch history is printed as the last line (JSON).

``gan-node-kill``: a third 1-CPU node stands by; the GAN runs 5 epochs with one
restart allowed and its epochs logged to MLflow (``MLFLOW_TRACKING_URI``). Once
MLflow has epoch 1, a non-head node that holds a worker is removed without
grace (its raylet and the worker on it get SIGKILL), so the worker group
restarts from the last checkpoint on the nodes left. The last line then also
has the MLflow run's logged steps and when the node was killed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import ddp_checks  # noqa: E402  (beside this file)
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from components import families, tracking  # noqa: E402
from components.train.ray_trainer import fit  # noqa: E402
from pipelines import features as features_stage  # noqa: E402
from pipelines import prepare  # noqa: E402
from pipelines import train as train_stage  # noqa: E402
from pipelines.config import load_params  # noqa: E402


def two_workers(cfg, max_failures: int = 0, **train_overrides):
    """``cfg`` with 2 DDP workers of 1 CPU each, on CPUs, ``max_failures`` restarts."""
    return dataclasses.replace(cfg, scaling=dataclasses.replace(cfg.scaling, num_workers=2, use_gpu=False,
                                                                max_failures=max_failures),
                               train=dataclasses.replace(cfg.train, threads_per_worker=1, **train_overrides))


def train(family: str, work: Path) -> dict:
    """Prepare the smoke data, train ``family`` with 2 workers; return the final state's history and nodes."""
    params = load_params(REPO / "params.yaml", profile="smoke")
    prepared = work / "data" / "prepared"
    prepare.run(params.prepare, prepared, work / "reports" / "prepare.json", progress=False)
    ddp_checks.send_by_value()
    if family == "captioner":
        features = work / "data" / "features"
        features_stage.run(params.features, prepared, features, progress=False)
        cfg = two_workers(params.train_captioner, epochs=3, early_stopping_patience=0)
        trainer = train_stage.build_trainer(families.get("captioner"), cfg,
                                      inputs={"prepared": prepared, "features": features},
                                      storage=work / "ray_results", run_name="multinode", logger=None,
                                      on_step=ddp_checks.captioner_ranks_in_sync)
    else:
        cfg = two_workers(params.train_gan, epochs=3, batch_size=8)
        trainer = train_stage.build_trainer(families.get("gan"), cfg, inputs={"prepared": prepared},
                                      storage=work / "ray_results", run_name="multinode", logger=None,
                                      on_step=ddp_checks.gan_ranks_in_sync)
    state = fit(trainer)
    return {"history": state["history"], "nodes": len([n for n in ray.nodes() if n["Alive"]])}


def _logged_steps(logger: tracking.RunLogger, key: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(logger.uri).get_metric_history(logger.run_id, key))


def _busy_worker_node(cluster: Cluster):
    """A non-head node whose CPU a Ray Train worker holds."""
    from ray._private.state import available_resources_per_node

    free = available_resources_per_node()
    for node in cluster.worker_nodes:
        if free.get(node.node_id, {}).get("CPU", 0) < 1:
            return node
    raise RuntimeError(f"no worker node is busy: {free}")


def train_through_a_node_kill(work: Path, cluster: Cluster) -> dict:
    """The GAN on 2 of 3 nodes; a worker's node is SIGKILLed once MLflow has epoch 1."""
    from mlflow import MlflowClient

    params = load_params(REPO / "params.yaml", profile="smoke")
    prepared = work / "data" / "prepared"
    prepare.run(params.prepare, prepared, work / "reports" / "prepare.json", progress=False)
    client = MlflowClient(tracking.tracking_uri())
    run_id = client.create_run(client.create_experiment("node-kill")).info.run_id
    logger = tracking.RunLogger(run_id, tracking.tracking_uri())
    cfg = two_workers(params.train_gan, max_failures=1, epochs=5, batch_size=8)
    trainer = train_stage.build_trainer(families.get("gan"), cfg, inputs={"prepared": prepared},
                                  storage=work / "ray_results", run_name="node-kill", logger=logger)
    killed: list[float] = []

    def kill_when_epoch_1_is_logged() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and max(_logged_steps(logger, "d_loss"), default=-1) < 1:
            time.sleep(0.2)
        cluster.remove_node(_busy_worker_node(cluster), allow_graceful=False)  # SIGKILL of its processes
        killed.append(time.time())

    watcher = threading.Thread(target=kill_when_epoch_1_is_logged, daemon=True)
    watcher.start()
    state = fit(trainer, logger=logger)
    watcher.join(timeout=60)
    return {"history": state["history"], "logged": _logged_steps(logger, "d_loss"), "killed_at": killed,
            "nodes": len([n for n in ray.nodes() if n["Alive"]])}


def main() -> None:
    family, work = sys.argv[1], Path(sys.argv[2])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    if family == "gan-node-kill":
        cluster.add_node(num_cpus=1)  # stands by for the restart
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        cluster.wait_for_nodes()
        result = train_through_a_node_kill(work, cluster) if family == "gan-node-kill" else train(family, work)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
