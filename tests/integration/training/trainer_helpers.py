"""Helpers for the trainer's end-to-end tests (a uniquely named module: several conftest.py exist)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TRAINING = REPO / "training"
TRAIN_PY = TRAINING / "train.py"
for folder in (TRAINING, REPO / "hacking"):  # mnist_trainer, make_mnist_split
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# Small runs: behaviour, not accuracy (the full-split run is in test_trainer_run.py).
SMALL = ["--limit-train", "640", "--limit-test", "200", "--log-interval", "5"]


def trainer_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["GLOO_SOCKET_IFNAME"] = "lo"  # torch.distributed stays on loopback
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    return env


def run_train(data_dir, *args, timeout=300):
    """Run train.py on data_dir (offline); returns the CompletedProcess."""
    cmd = [sys.executable, str(TRAIN_PY), "--data-dir", str(data_dir), "--no-download", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=trainer_env(), check=False)


def progress_rows(stdout: str) -> list:
    """The JSON of every PROGRESS line."""
    return [json.loads(line[len("PROGRESS "):]) for line in stdout.splitlines() if line.startswith("PROGRESS ")]


def load_cli():
    """training/train.py as a module (under a name that cannot clash), for in-process runs."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("cloudtrain_train_cli", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
