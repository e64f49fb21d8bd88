"""Atomic checkpoints that hold everything an exact resume needs.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over
its final name: a reader (or a run killed mid-write) sees either the old file or the new one, never
half of one. Names sort by progress: checkpoint-<epoch>-<step>.pt means "continue with batch
<step> of epoch <epoch>" (step 0: the epoch has not started).
"""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import torch

from .errors import BadInput
from .model import MODEL_NAME, signature

FORMAT = "cloudtrain-mnist-checkpoint"
VERSION = 1
NAME_RE = re.compile(r"^checkpoint-(\d{4,})-(\d{6,})\.pt$")


def checkpoint_name(epoch: int, step: int) -> str:
    return f"checkpoint-{epoch:04d}-{step:06d}.pt"


def list_checkpoints(folder: Path) -> list:
    """This trainer's checkpoints in folder, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = NAME_RE.match(path.name)
        if match:
            found.append(((int(match.group(1)), int(match.group(2))), path))
    return [item[1] for item in sorted(found)]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save(folder: Path, payload: dict, keep: int) -> Path:
    """Write payload atomically as the checkpoint for (epoch, step); keep the newest `keep` files."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / checkpoint_name(payload["epoch"], payload["step"])
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def _torch_load(path: Path):
    # torch 2.x: weights_only refuses pickled code; our checkpoints hold only tensors and plain data.
    # torch 1.13 has the flag but its unpickler cannot read floats (opcode BINFLOAT), so it gets a
    # plain load there (the checkpoint folder is the trainer's own).
    if int(torch.__version__.split(".")[0]) >= 2:
        return torch.load(path, map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu")


def load(path: Path, model_state: dict) -> dict:
    """Read a checkpoint and check it belongs to this trainer and model; BadInput otherwise."""
    try:
        payload = _torch_load(path)
    except Exception as exc:  # noqa: BLE001 (pickle, zip and IO errors all mean "unreadable")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadInput(f"{path} is not a checkpoint of this trainer (remove it or pass --no-resume)")
    if payload.get("model_name") != MODEL_NAME or payload.get("signature") != signature(model_state):
        raise BadInput(
            f"checkpoint {path} is from another model ({payload.get('model_name')}); "
            "remove it, use another --checkpoint-dir, or pass --no-resume"
        )
    return payload


def payload(model_state, optimizer, scheduler, epoch, step, extra: dict) -> dict:
    body = {
        "format": FORMAT,
        "version": VERSION,
        "model_name": MODEL_NAME,
        "signature": signature(model_state),
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "step": step,
        "rng": rng_state(),
    }
    body.update(extra)
    return body
