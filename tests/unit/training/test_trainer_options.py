"""mnist_trainer.options and report: folders from CLOUDTRAIN_* variables, refused numbers, JSON without NaN."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mnist_trainer import report
from mnist_trainer.errors import EXIT_BAD_INPUT
from mnist_trainer.options import parse_args

FOLDERS = {"CLOUDTRAIN_DATA_DIR": "/data", "CLOUDTRAIN_OUTPUT_DIR": "/output", "CLOUDTRAIN_CHECKPOINT_DIR": "/ckpt"}


def test_folders_default_to_the_examples_without_variables(monkeypatch):
    for name in FOLDERS:
        monkeypatch.delenv(name, raising=False)
    args = parse_args([])
    assert (args.data_dir, args.output_dir, args.checkpoint_dir) == (
        Path("../data"), Path("outputs"), Path("outputs/checkpoints"))


def test_folders_come_from_the_variables_and_flags_win(monkeypatch):
    for name, value in FOLDERS.items():
        monkeypatch.setenv(name, value)
    args = parse_args([])
    assert (args.data_dir, args.output_dir, args.checkpoint_dir) == (Path("/data"), Path("/output"), Path("/ckpt"))
    args = parse_args(["--data-dir", "d", "--output-dir", "o", "--checkpoint-dir", "c"])
    assert (args.data_dir, args.output_dir, args.checkpoint_dir) == (Path("d"), Path("o"), Path("c"))
    monkeypatch.delenv("CLOUDTRAIN_CHECKPOINT_DIR")
    assert parse_args(["--output-dir", "o"]).checkpoint_dir == Path("o/checkpoints")


@pytest.mark.parametrize("option, value", [("--lr", "inf"), ("--lr", "nan"), ("--lr", "-1"), ("--lr", "0"),
                                           ("--gamma", "inf"), ("--gamma", "nan")])
def test_non_finite_or_non_positive_numbers_are_refused(capsys, option, value):
    with pytest.raises(SystemExit) as exited:
        parse_args([option, value])
    assert exited.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: argument {option}: must be a positive finite number")


def test_dry_run_is_one_epoch():
    assert parse_args(["--dry-run", "--epochs", "5"]).epochs == 1


def test_json_has_no_nan_literals():
    row = {"epoch": 1, "train_loss": math.nan, "test_loss": math.inf, "nested": [1.0, -math.inf]}
    text = report.to_json(row)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"epoch": 1, "train_loss": None, "test_loss": None, "nested": [1.0, None]}
