"""infra/: every manifest parses and keeps the fields that matter (image, GPUs, entrypoint, auth, no public ports)."""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from components.train.ray_trainer import STORAGE_ENV

INFRA = Path(__file__).resolve().parents[2] / "infra"
IMAGE = re.compile(r"^[\w.\-/]+/capsynth:\d+\.\d+\.\d+$")  # the project's image, a pinned version


def docs(name: str) -> list[dict]:
    with open(INFRA / name) as f:
        return [d for d in YAML(typ="safe", pure=True).load_all(f) if d]


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a nested YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def containers(doc: dict) -> list[dict]:
    return [c for k, v in walk(doc) if k == "containers" for c in v]


def ray_cluster_spec(name: str) -> dict:
    (doc,) = [d for d in docs(name) if d["kind"] in ("RayCluster", "RayJob")]
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


ALL_YAML = sorted(str(p.relative_to(INFRA)) for p in INFRA.rglob("*.yaml"))


def test_the_manifests_are_there():
    assert {"ray/cluster.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/storage.yaml",
            "mlflow/mlflow.yaml"} <= set(ALL_YAML)


@pytest.mark.parametrize("name", ALL_YAML)
def test_nothing_is_exposed_and_no_secret_is_written_down(name):
    for doc in docs(name):
        for key, value in walk(doc):
            assert not (key == "type" and value in ("LoadBalancer", "NodePort")), f"{name}: public Service"
            assert not (key == "serviceType" and value != "ClusterIP"), f"{name}: head service {value}"
            assert not (key == "dashboard-host" and value == "0.0.0.0"), f"{name}: public dashboard"
            if key == "env":
                for var in value:
                    if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", var["name"]):
                        assert "valueFrom" in var, f"{name}: {var['name']} is a literal, use a Secret"
        assert doc.get("kind") != "Ingress", f"{name}: no Ingress"
    text = (INFRA / name).read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|postgresql://[^:\s]+:(?!<)[^@\s]+@", text), f"{name}: a credential"


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_kuberay_clusters_use_the_image_token_auth_and_gpu_workers(name):
    spec = ray_cluster_spec(name)
    assert spec["authOptions"]["mode"] == "token" and spec["rayVersion"] == "2.60.0"
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    for container in containers(spec):
        assert IMAGE.match(container["image"]), container["image"]
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= {
            e["name"] for e in container["env"]}
    (gpu,) = spec["workerGroupSpecs"]
    (worker,) = gpu["template"]["spec"]["containers"]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1 and gpu["maxReplicas"] >= 1
    mounts = {m["mountPath"] for c in containers(spec) for m in c["volumeMounts"]}
    assert mounts == {"/mnt/shared"}  # one shared workspace on every node


def test_raycluster_head_is_fenced_by_a_network_policy():
    (policy,) = [d for d in docs("kuberay/raycluster.yaml") if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/cluster": "capsynth", "ray.io/node-type": "head"}
    assert policy["spec"]["policyTypes"] == ["Ingress"] and policy["spec"]["ingress"][0]["from"]


def test_rayjob_runs_the_pipeline_and_pushes_its_outputs():
    (job,) = docs("kuberay/rayjob.yaml")
    spec = job["spec"]
    assert "dvc repro" in spec["entrypoint"] and "dvc push" in spec["entrypoint"]
    assert spec["entrypoint"].index("dvc repro") < spec["entrypoint"].index("dvc push")
    assert spec["submissionMode"] == "SidecarMode" and spec["shutdownAfterJobFinishes"] is True
    env = YAML(typ="safe", pure=True).load(spec["runtimeEnvYAML"])["env_vars"]
    assert env[STORAGE_ENV].startswith("s3://")


def test_cluster_launcher_keeps_the_dashboard_local_with_token_auth_and_gpu_workers():
    (cfg,) = docs("ray/cluster.yaml")
    assert IMAGE.match(cfg["docker"]["image"])
    head_cmd = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmd and "0.0.0.0" not in head_cmd
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert any("auth_token" in c for c in cfg["initialization_commands"])
    gpu_types = [t for t in cfg["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"] == {"CPU": 0}


def test_mlflow_server_has_auth_postgres_from_a_secret_and_s3_artifacts():
    by_kind = {d["kind"]: d for d in docs("mlflow/mlflow.yaml")}
    (server,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    command = " ".join(server["args"])
    assert "--app-name basic-auth" in command and "--artifacts-destination s3://" in command
    env = {e["name"]: e for e in server["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in env
    ini = configparser.ConfigParser()
    ini.read_string(by_kind["ConfigMap"]["data"]["basic_auth.ini"])
    assert "admin_password" not in ini["mlflow"]
    assert by_kind["Service"]["spec"]["type"] == "ClusterIP"


def test_dvc_remote_example_is_s3_without_credentials():
    text = (INFRA / "dvc" / "config.example").read_text()
    ini = configparser.ConfigParser()
    ini.read_string(text)
    assert ini['\'remote "storage"\'']["url"].startswith("s3://") and ini["core"]["remote"] == "storage"
    assert not {"access_key_id", "secret_access_key"} & set(ini['\'remote "storage"\''])
