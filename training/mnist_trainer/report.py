"""What a run leaves behind: metrics.jsonl, metrics.json, curves.png, and PROGRESS lines."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


def progress_line(row: dict) -> str:
    """One line per epoch for log followers: the word PROGRESS, a space, one-line JSON."""
    return "PROGRESS " + json.dumps(row, separators=(", ", ": "))


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_history(output_dir: Path, history: list) -> None:
    """metrics.jsonl, one row per finished epoch (rewritten whole, so a resume never duplicates)."""
    _atomic_write(output_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))


def write_summary(output_dir: Path, summary: dict) -> None:
    _atomic_write(output_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")


def plot_curves(output_dir: Path, history: list) -> bool:
    """curves.png: loss and accuracy by epoch. Skipped with a warning when matplotlib is missing."""
    if not history:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")  # headless: containers and instances have no display
        from matplotlib import pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed, curves.png not written", file=sys.stderr)
        return False
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    ax_loss.plot(epochs, [row["test_loss"] for row in history], marker="o", label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (NLL)")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(epochs, [100.0 * row["accuracy"] for row in history], marker="o", color="tab:green")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.grid(alpha=0.3)
    fig.suptitle("MNIST training")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=output_dir, prefix=".curves.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, output_dir / "curves.png")
    return True
