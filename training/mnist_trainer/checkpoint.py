"""Checkpoints with everything an exact resume needs, and the checks before resuming one.

checkpoint-<E>-<S>.pt means "continue with batch S of epoch E", so the names sort by progress.
"""
import os
import re
import tempfile
from pathlib import Path

import torch

from .errors import BadInput

FORMAT, VERSION = "cloudtrain-mnist-checkpoint", 2
NAME_RE = re.compile(r"^checkpoint-(\d{4,})-(\d{6,})\.pt$")
AGAIN = "remove it, use another --checkpoint-dir, or pass --no-resume to start over"


def checkpoint_name(epoch: int, step: int) -> str:
    return f"checkpoint-{epoch:04d}-{step:06d}.pt"


def list_checkpoints(folder: Path) -> list:
    """This trainer's checkpoints in folder, oldest first."""
    found = [(tuple(map(int, m.groups())), p) for p in (folder.iterdir() if folder.is_dir() else [])
             if (m := NAME_RE.match(p.name))]
    return [path for _progress, path in sorted(found)]


def signature(state_dict) -> dict:
    """Parameter names and shapes: what a checkpoint must match to belong to this model."""
    return {name: list(tensor.shape) for name, tensor in state_dict.items()}


def first_line(exc: Exception) -> str:
    """The error on one line, at most 200 characters (torch's can span many)."""
    return f"no {exc}" if isinstance(exc, KeyError) else (" ".join(str(exc).split()) or type(exc).__name__)[:200]


def save(folder: Path, payload: dict, keep: int) -> Path:
    """Write payload under its (epoch, step) name, keep the newest `keep`. Written to a temporary name,
    fsynced, renamed: a reader (or a run killed mid-write) sees the old file or the new, never half."""
    path = folder / checkpoint_name(payload["epoch"], payload["step"])
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def resume(path: Path, settings: dict, net, optimizer, scheduler, scaler):
    """Load a checkpoint into the live objects; (epoch, step, history, partial, trained_seconds).

    BadInput (one line, no traceback) unless it is this trainer's, for this model, made with these
    settings, and consistent.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    except Exception as exc:  # noqa: BLE001 (pickle, zip and I/O errors all mean "unreadable")
        raise BadInput(f"cannot read checkpoint {path}: {first_line(exc)}; {AGAIN}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadInput(f"{path} is not a checkpoint of this trainer; {AGAIN}")
    if payload.get("signature") != signature(net.state_dict()):
        raise BadInput(f"checkpoint {path} is from another model; {AGAIN}")
    saved = payload.get("settings") if isinstance(payload.get("settings"), dict) else {}
    changed = [f"{key} {saved.get(key)} -> {value}" for key, value in settings.items() if saved.get(key) != value]
    if changed:
        raise BadInput(f"checkpoint {path} was made with other settings ({', '.join(changed)}); use the same "
                       "settings (only --epochs may change), or pass --no-resume to start over")
    try:
        net.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        for param, state in optimizer.state.items():  # load_state_dict does not check the shapes
            if any(state[key].shape != param.shape for key in ("square_avg", "acc_delta")):
                raise ValueError("the optimizer state does not fit the model")
        epoch, step, history = payload["epoch"], payload["step"], payload["history"]
        if not (isinstance(epoch, int) and isinstance(step, int) and epoch >= 1 and step >= 0
                and isinstance(history, list) and len(history) == epoch - 1):
            raise ValueError(f"epoch {epoch!r}, step {step!r} and the history disagree")
        partial = {key: float(payload["partial"][key]) for key in ("loss_sum", "samples", "train_seconds")}
        trained_seconds = float(payload["trained_seconds"])
        torch.set_rng_state(payload["rng"]["torch"])
        if "accel" in payload["rng"] and torch.accelerator.is_available():
            getattr(torch, torch.accelerator.current_accelerator().type).set_rng_state(payload["rng"]["accel"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise BadInput(f"checkpoint {path} is inconsistent ({first_line(exc)}); {AGAIN}") from None
    return epoch, step, history, partial, trained_seconds


def rng_state(device: torch.device) -> dict:
    """The generators that draw the dropout masks: the CPU's, and the accelerator's when training there."""
    state = {"torch": torch.get_rng_state()}
    if device.type != "cpu":
        state["accel"] = getattr(torch, device.type).get_rng_state(device)
    return state
