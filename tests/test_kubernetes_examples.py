"""The Kubernetes examples under docs/kubernetes/ parse and point at what the project has."""

import pathlib

import yaml

from usss_tf import config as config_lib
from usss_tf.serving import contract, model_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "kubernetes"


def _documents(name):
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def test_tfjob_runs_the_train_command_on_several_workers():
    (job,) = _documents("tfjob.yaml")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
    workers = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert workers["replicas"] >= 2
    (container,) = workers["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["usss-tf", "train"]
    config_lib.load_config(ROOT / command[2])  # The config it names exists and validates.
    assert "--run-dir" in command and command[command.index("--run-dir") + 1].startswith("/runs/")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/runs" in mounts


def test_serving_deployment_reads_the_committed_model_config():
    deployment, service = _documents("serving.yaml")
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("tensorflow/serving")
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"] if "=" in a)
    assert args["model_config_file"] == "/models/models.config"
    entries = model_config.read_model_config(ROOT / "saved_models" / "models.config")
    assert [e.name for e in entries] == [contract.DEFAULT_MODEL_NAME]
    assert all(str(e.base_path).startswith("/models/") for e in entries)
    ports = {p["containerPort"] for p in container["ports"]}
    assert ports == {contract.DEFAULT_GRPC_PORT, contract.DEFAULT_REST_PORT}
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{contract.DEFAULT_MODEL_NAME}"
