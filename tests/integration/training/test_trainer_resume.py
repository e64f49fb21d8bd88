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

from mnist_trainer.errors import EXIT_BAD_INPUT, EXIT_PREEMPTED

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


def test_other_settings_are_refused_then_no_resume_starts_over(train, tmp_path):
    first = train("--output-dir", str(tmp_path), "--epochs", "1", *SMALL)
    assert first.returncode == 0, first.stderr
    changed = train("--output-dir", str(tmp_path), "--epochs", "2", "--lr", "0.5", "--batch-size", "32", *SMALL)
    assert changed.returncode == EXIT_BAD_INPUT
    assert changed.stderr.strip().splitlines() == [changed.stderr.strip()]  # one line
    assert "lr 1.0 -> 0.5" in changed.stderr and "batch_size 64 -> 32" in changed.stderr
    fresh = train("--output-dir", str(tmp_path), "--epochs", "1", "--lr", "0.5", "--no-resume", *SMALL)
    assert fresh.returncode == 0, fresh.stderr
    assert "removed 1 old checkpoint(s)" in fresh.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["lr"] == 0.5


def test_other_training_data_is_refused(train, tmp_path):
    assert train("--output-dir", str(tmp_path), "--epochs", "1", *SMALL).returncode == 0
    other = train("--output-dir", str(tmp_path), "--epochs", "2", *SMALL[:1], "320", *SMALL[2:])
    assert other.returncode == EXIT_BAD_INPUT and "train_data 640 images" in other.stderr


def test_dry_run_writes_no_checkpoint_and_reads_none(train, tmp_path):
    dry = train("--output-dir", str(tmp_path), "--dry-run", *SMALL)
    assert dry.returncode == 0, dry.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["stopped_reason"] == "dry_run"
    assert not list((tmp_path / "checkpoints").glob("*.pt"))
    real = train("--output-dir", str(tmp_path), "--epochs", "1", *SMALL)
    assert real.returncode == 0 and "resuming" not in real.stdout
    assert [r["epoch"] for r in progress_rows(real.stdout)] == [1]
    again = train("--output-dir", str(tmp_path), "--dry-run", *SMALL)  # a used folder: still a fresh pass
    assert again.returncode == 0 and "resuming" not in again.stdout
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["checkpoint-0002-000000.pt"]


def test_folders_from_the_environment(mnist_data, tmp_path):
    env = dict(trainer_env(), CLOUDTRAIN_DATA_DIR=str(mnist_data), CLOUDTRAIN_OUTPUT_DIR=str(tmp_path / "out"),
               CLOUDTRAIN_CHECKPOINT_DIR=str(tmp_path / "ckpt"))
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "--no-download", "--epochs", "1", *SMALL],
                          capture_output=True, text=True, timeout=300, env=env, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["checkpoint-0002-000000.pt"]
