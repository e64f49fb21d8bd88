"""What a run leaves behind: model.pt, metrics.jsonl, metrics.json, curves.png."""
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch


def finite(value):
    """value with each NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_json(value, **kwargs) -> str:
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; whoever fetches the outputs may be another user
    os.replace(tmp, path)


def write_history(out: Path, history: list) -> None:
    """metrics.jsonl, one row per finished epoch (rewritten whole, so a resume never duplicates)."""
    atomic_write(out / "metrics.jsonl", "".join(to_json(row) + "\n" for row in history))


def write_outputs(out: Path, history: list, net, summary: dict) -> None:
    """model.pt (unless net is None), metrics.jsonl, metrics.json (summary and the best epoch), curves.png."""
    if net is not None:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / ".model.pt.tmp")
        os.replace(out / ".model.pt.tmp", out / "model.pt")
    write_history(out, history)
    best = max(history, key=lambda row: row["accuracy"], default={"accuracy": summary["final_accuracy"], "epoch": None})
    summary.update(best_accuracy=best["accuracy"], best_epoch=best["epoch"], epochs_completed=len(history))
    atomic_write(out / "metrics.json", to_json(summary, indent=2) + "\n")
    if history:
        plot_curves(out, history)


def plot_curves(out: Path, history: list) -> None:
    """curves.png: loss and accuracy by epoch; skipped with a warning where matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # headless: containers have no display
        from matplotlib import pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed, curves.png not written", file=sys.stderr)
        return
    epochs = [row["epoch"] for row in history]
    fig, (loss, accuracy) = plt.subplots(1, 2, figsize=(10, 4), layout="tight")
    for split in ("train", "test"):
        loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
    loss.set(xlabel="epoch", ylabel="loss (NLL)")
    loss.legend()
    accuracy.plot(epochs, [100 * row["accuracy"] for row in history], marker="o", color="tab:green")
    accuracy.set(xlabel="epoch", ylabel="test accuracy (%)")
    fig.savefig(out / ".curves.png.tmp", dpi=100, format="png")
    plt.close(fig)
    os.replace(out / ".curves.png.tmp", out / "curves.png")
