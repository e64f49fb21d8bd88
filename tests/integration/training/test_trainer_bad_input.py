"""Bad input: exit code 2, one line 'error: ...' on stderr, no traceback.

Two cases run the real command line in a subprocess; the rest call train.py's main() in-process
(same code path, same stderr) to keep the suite fast.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch
from trainer_helpers import SMALL, load_cli, run_train

from mnist_trainer import checkpoint as ckpt
from mnist_trainer.errors import EXIT_BAD_INPUT, EXIT_DIVERGED


CLI = load_cli()


def run_in_process(capsys, data_dir, *args):
    """main() with the same arguments run_train passes; returns a CompletedProcess-like result."""
    code = CLI.main(["--data-dir", str(data_dir), "--no-download", *args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == EXIT_BAD_INPUT, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def data_copy(mnist_data, tmp_path):
    """A private copy of the split that a test may damage."""
    root = tmp_path / "data"
    shutil.copytree(mnist_data, root)
    return root


def test_missing_data(tmp_path):
    proc = run_train(tmp_path / "nothing-here", "--output-dir", str(tmp_path / "out"))
    assert_one_line_error(proc, "MNIST data not found", "train-images-idx3-ubyte")


def test_wrong_idx_magic(data_copy, tmp_path, capsys):
    path = data_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    content = bytearray(path.read_bytes())
    content[2:4] = b"\x08\x01"  # the labels' magic in the images file
    path.write_bytes(bytes(content))
    proc = run_in_process(capsys, data_copy, "--output-dir", str(tmp_path / "out"))
    assert_one_line_error(proc, "corrupt MNIST file", "magic")


def test_truncated_idx(data_copy, tmp_path, capsys):
    path = data_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    proc = run_in_process(capsys, data_copy, "--output-dir", str(tmp_path / "out"))
    assert_one_line_error(proc, "corrupt MNIST file", "truncated")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(mnist_data, tmp_path, capsys):
    proc = run_in_process(capsys, mnist_data, "--output-dir", str(tmp_path), "--device", "cuda")
    assert_one_line_error(proc, "--device cuda", "no CUDA GPU")


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--epochs", "-3"), ("--batch-size", "0"),
                                           ("--batch-size", "-64"), ("--test-batch-size", "0")])
def test_non_positive_sizes(mnist_data, tmp_path, option, value, capsys):
    with pytest.raises(SystemExit) as exited:  # argparse exits from inside main()
        run_in_process(capsys, mnist_data, "--output-dir", str(tmp_path), option, value)
    proc = subprocess.CompletedProcess([], exited.value.code, "", capsys.readouterr().err)
    assert_one_line_error(proc, option, "positive")


def test_non_positive_epochs_on_the_command_line(mnist_data, tmp_path):
    proc = run_train(mnist_data, "--output-dir", str(tmp_path), "--epochs", "0")
    assert_one_line_error(proc, "--epochs", "positive")


def test_unwritable_output_dir(mnist_data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")  # a file where a folder should be: unwritable even for root
    proc = run_in_process(capsys, mnist_data, "--output-dir", str(blocker / "out"))
    assert_one_line_error(proc, "--output-dir", "not writable")


def test_checkpoint_from_another_model(mnist_data, tmp_path, capsys):
    other = torch.nn.Linear(784, 10)
    payload = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "signature": ckpt.signature(other.state_dict()),
               "model": other.state_dict(), "epoch": 2, "step": 0}
    (tmp_path / "checkpoints").mkdir()
    torch.save(payload, tmp_path / "checkpoints" / ckpt.checkpoint_name(2, 0))
    proc = run_in_process(capsys, mnist_data, "--output-dir", str(tmp_path), *SMALL)
    assert_one_line_error(proc, "another model")


def test_checkpoint_with_a_valid_header_but_wrong_contents(mnist_data, tmp_path, capsys):
    first = run_in_process(capsys, mnist_data, "--output-dir", str(tmp_path), "--epochs", "1", *SMALL)
    assert first.returncode == 0, first.stderr
    path = tmp_path / "checkpoints" / ckpt.checkpoint_name(2, 0)
    payload = torch.load(path, weights_only=True)
    payload["optimizer"]["state"][2]["acc_delta"] = torch.zeros(5)  # conv2's state, the wrong shape
    torch.save(payload, path)
    proc = run_in_process(capsys, mnist_data, "--output-dir", str(tmp_path), "--epochs", "2", *SMALL)
    assert_one_line_error(proc, "is inconsistent", "optimizer state does not fit")


def test_file_that_is_not_a_checkpoint(mnist_data, tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"weights": torch.zeros(3)}, tmp_path / "checkpoints" / ckpt.checkpoint_name(1, 0))
    proc = run_in_process(capsys, mnist_data, "--output-dir", str(tmp_path), *SMALL)
    assert_one_line_error(proc, "not a checkpoint of this trainer")


def test_infinite_learning_rate_on_the_command_line(mnist_data, tmp_path):
    proc = run_train(mnist_data, "--output-dir", str(tmp_path), "--lr", "inf")
    assert_one_line_error(proc, "--lr", "positive finite number")
    assert not (tmp_path / "checkpoints").exists()


def test_a_diverged_run_stops_with_its_own_code_and_valid_json(mnist_data, tmp_path, capsys):
    proc = run_in_process(capsys, mnist_data, "--output-dir", str(tmp_path), "--epochs", "2", "--lr", "1e20", *SMALL)
    assert proc.returncode == EXIT_DIVERGED, proc.stderr
    assert "training diverged" in proc.stderr and "Traceback" not in proc.stderr
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = json.loads(text)
    assert summary["stopped_reason"] == "diverged" and summary["final_accuracy"] is None
    assert not list((tmp_path / "checkpoints").iterdir()) and not (tmp_path / "model.pt").exists()
