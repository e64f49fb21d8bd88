"""site.yml -e nodes=2: one training job over two stand-in instances (torchrun, gloo on CPU).

The instances share the host's loopback: the stand-in's host variables give each node its own
loopback address as the address the other reaches it by (cloudtrain_node_address) and `lo` as the
interface (cloudtrain_node_ifname); nothing goes to the emulator's private addresses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from site_helpers import DATA, REPO, instance_states, run_instances, run_site, start_site

# The trainer's arguments of both runs below (site_helpers' small run, and the flags the train role adds).
TRAIN_ARGS = ["--limit-train", "500", "--limit-test", "200", "--threads", "1"]


def _node_ids(run_name: str) -> list[str]:
    """The run's instances in node order (the provision role sorts them by ID)."""
    return sorted(i["InstanceId"] for i in run_instances(run_name))


def _reference_weights(tmp_path) -> dict:
    """The same training on one machine: two processes under torchrun, same seed, same global batch."""
    out = tmp_path / "reference"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "training" / "train.py"), "--data-dir", str(DATA), "--no-download", "--no-resume",
           "--output-dir", str(out / "output"), "--checkpoint-dir", str(out / "checkpoints"),
           "--epochs", "1", *TRAIN_ARGS]
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(out / "output" / "model.pt", map_location="cpu")


def test_two_nodes_train_one_job(aws, standin, tmp_path):
    summary_file = tmp_path / "summary.json"
    result = run_site(standin, "nodes-two", tmp_path, nodes=2, summary_file=str(summary_file))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    artifacts = tmp_path / "artifacts" / "nodes-two"

    # Both nodes took part: one job of world size 2, whose results came from rank 0 only.
    metrics = json.loads((artifacts / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_completed"] == 1
    assert sorted(p.name for p in artifacts.iterdir()) == [
        "curves.png", "metrics.json", "metrics.jsonl", "model.pt", "train-node0.log", "train-node1.log"]
    node0, node1 = (artifacts / "train-node0.log").read_text(), (artifacts / "train-node1.log").read_text()
    assert "world size 2" in node0 and "Train Epoch: 1" in node0
    # rank 1 trains and prints nothing of its own (the trainer speaks from rank 0)
    assert "Train Epoch" not in node1

    summary = json.loads(summary_file.read_text())
    ids = _node_ids("nodes-two")
    assert summary["outcome"] == "succeeded" and summary["nodes"] == ids
    assert [(i["id"], i["node"]) for i in summary["instances"]] == [(ids[0], 0), (ids[1], 1)]
    assert summary["instances"][0]["final_accuracy"] == metrics["final_accuracy"]
    assert sorted(summary["instance_states"].values()) == ["stopped", "stopped"]

    # Gradients are summed by one gloo all-reduce of two buckets in both runs, on the same CPU with one
    # thread per process and the same torch build: the weights are the same to the bit.
    trained = torch.load(artifacts / "model.pt", map_location="cpu")
    reference = _reference_weights(tmp_path)
    assert trained.keys() == reference.keys()
    unequal = [name for name in trained if not torch.equal(trained[name], reference[name])]
    assert not unequal, {n: (trained[n] - reference[n]).abs().max().item() for n in unequal}


def _node_log(instance_id: str, run_name: str) -> str:
    proc = subprocess.run(["docker", "exec", instance_id, "docker", "logs", run_name],
                          capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def test_a_killed_node_fails_the_job(aws, standin, tmp_path):
    run = "nodes-kill"
    log = tmp_path / "site.log"
    # The full split for several epochs: long enough to kill node 1 in the middle of it.
    proc = start_site(standin, run, tmp_path, log, nodes=2, epochs=20, train_args=["--threads", "1"])
    try:
        deadline, ids = time.monotonic() + 900, []
        while time.monotonic() < deadline and proc.poll() is None:
            ids = _node_ids(run)
            if len(ids) == 2 and "Train Epoch: 1" in _node_log(ids[0], run):
                break
            time.sleep(2)
        else:
            pytest.fail(f"node 0 never started training:\n{log.read_text()[-4000:]}")
        # node 1's training container dies, as its instance would on a failure
        subprocess.run(["docker", "exec", ids[1], "docker", "kill", run], check=True, capture_output=True)
        killed_at = time.monotonic()
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    out = log.read_text()
    assert proc.returncode != 0, out[-4000:]
    failure = " ".join(out[out.rfind("Fail the run with the recorded failure"):].split())
    # node 1 named, with its exit (SIGKILL); node 0 ended because its peer went, not at the 20th epoch
    assert f"node 1 ({ids[1]})" in failure and "137" in failure, failure[-3000:]
    assert f"node 0 ({ids[0]})" in failure, failure[-3000:]
    assert "epochs_completed" not in (tmp_path / "artifacts" / run / "train-node0.log").read_text()
    assert time.monotonic() - killed_at < 300
    states = instance_states(run)
    assert sorted(states) == ["stopped", "stopped"], states


@pytest.mark.parametrize("extra", [{"nodes": 0}, {"nodes": "two"}, {"nodes": 2, "instance_count": 3}],
                         ids=["zero", "not-a-number", "other-instance-count"])
def test_bad_node_counts_fail_before_anything_is_created(aws, standin, tmp_path, extra):
    result = run_site(standin, "nodes-bad", tmp_path, **extra)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and f"nodes: '{extra['nodes']}'" in out, out[-3000:]
    assert "accepted: a whole number of 1 or more" in out
    assert instance_states("nodes-bad") == []
