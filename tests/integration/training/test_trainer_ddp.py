"""DistributedDataParallel with two CPU processes started by torchrun (gloo, loopback only)."""
from __future__ import annotations

import json
import subprocess
import sys

import torch
from trainer_helpers import TRAIN_PY, progress_rows, trainer_env

from mnist_trainer.model import Net


def test_two_cpu_processes(mnist_data, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(TRAIN_PY), "--data-dir", str(mnist_data), "--no-download", "--output-dir", str(out),
           "--device", "cpu", "--epochs", "2", "--limit-train", "512", "--limit-test", "200",
           "--log-interval", "2"]
    env = trainer_env()
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # only rank 0 prints and writes: one PROGRESS line per epoch, one set of files
    rows = progress_rows(proc.stdout)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert "world size 2" in proc.stdout
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["world_size"] == 2
    assert summary["epochs_completed"] == 2
    assert summary["train_samples"] == 512
    assert 0.0 < summary["final_accuracy"] <= 1.0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-0002-000000.pt", "checkpoint-0003-000000.pt"]
    Net().load_state_dict(torch.load(out / "model.pt", map_location="cpu"))
    # each rank trained on its half of every epoch: 256 samples per rank, 512 in total
    assert rows[0]["samples_per_s"] > 0
