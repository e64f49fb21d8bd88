"""Exact resume: a run stopped (by --epochs or by SIGTERM) and resumed ends with the same weights."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from trainer_helpers import SMALL, TRAIN_PY, progress_rows, trainer_env

from mnist_trainer.errors import EXIT_PREEMPTED

EPOCHS = "3"


def weights(out_dir):
    return torch.load(out_dir / "model.pt", map_location="cpu")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


@pytest.fixture(scope="module")
def uninterrupted(mnist_data, tmp_path_factory):
    """The reference: three epochs in one go."""
    from trainer_helpers import run_train
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run_train(mnist_data, "--output-dir", str(out), "--epochs", EPOCHS, *SMALL)
    assert proc.returncode == 0, proc.stderr
    return out


def test_resume_after_epochs_is_exact(train, uninterrupted, tmp_path):
    first = train("--output-dir", str(tmp_path), "--epochs", "1", *SMALL)
    assert first.returncode == 0, first.stderr
    second = train("--output-dir", str(tmp_path), "--epochs", EPOCHS, *SMALL)
    assert second.returncode == 0, second.stderr
    assert "resuming from" in second.stdout
    assert [r["epoch"] for r in progress_rows(second.stdout)] == [2, 3]
    assert_same_weights(weights(tmp_path), weights(uninterrupted))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in reference]


def test_finished_run_started_again_does_nothing(train, uninterrupted):
    before = weights(uninterrupted)
    again = train("--output-dir", str(uninterrupted), "--epochs", EPOCHS, *SMALL)
    assert again.returncode == 0, again.stderr
    assert progress_rows(again.stdout) == []
    assert_same_weights(weights(uninterrupted), before)


def test_sigterm_saves_checkpoint_and_resume_is_exact(mnist_data, train, uninterrupted, tmp_path):
    cmd = [sys.executable, str(TRAIN_PY), "--data-dir", str(mnist_data), "--no-download",
           "--output-dir", str(tmp_path), "--epochs", EPOCHS, *SMALL]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trainer_env())
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:  # wait for the first finished epoch, then stop it like `docker stop`
            if line.startswith("PROGRESS ") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_PREEMPTED, stderr
    assert "received SIGTERM" in stdout
    assert "Traceback" not in stderr
    saved = sorted((tmp_path / "checkpoints").glob("checkpoint-*.pt"))
    assert saved and saved[-1].name >= "checkpoint-0002-000000.pt"
    assert not (tmp_path / "metrics.json").exists()  # the run is not finished

    resumed = train("--output-dir", str(tmp_path), "--epochs", EPOCHS, *SMALL)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {saved[-1]}" in resumed.stdout
    assert_same_weights(weights(tmp_path), weights(uninterrupted))
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_completed"] == int(EPOCHS)
