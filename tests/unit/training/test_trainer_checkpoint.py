"""mnist_trainer.checkpoint: atomic files, ordering, pruning, and refusing what cannot be resumed."""
from __future__ import annotations

import pytest
import torch
from torch import optim
from torch.optim.lr_scheduler import StepLR

from mnist_trainer import checkpoint as ckpt
from mnist_trainer.errors import BadInput
from mnist_trainer.model import Net

SETTINGS = {"batch_size": 64, "lr": 1.0, "gamma": 0.7, "seed": 1, "amp": "off", "world_size": 1,
            "train_data": "640 images, crc32 0123abcd"}


def live_objects():
    net = Net()
    optimizer = optim.Adadelta(net.parameters(), lr=1.0)
    net(torch.zeros(2, 1, 28, 28)).sum().backward()
    optimizer.step()  # the optimizer now has state to save
    return net, optimizer, StepLR(optimizer, step_size=1, gamma=0.7), torch.amp.GradScaler("cpu", enabled=False)


def make_payload(epoch, step, **changes):
    net, optimizer, scheduler, scaler = live_objects()
    body = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "signature": ckpt.signature(net.state_dict()),
            "settings": dict(SETTINGS), "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
            "history": [{"epoch": e, "accuracy": 0.5} for e in range(1, epoch)],
            "partial": {"loss_sum": 1.5, "samples": 64, "train_seconds": 0.25}, "trained_seconds": 3.0,
            "rng": ckpt.rng_state(torch.device("cpu"))}
    body.update(changes)
    return body


def test_names_sort_by_progress(tmp_path):
    for epoch, step in [(2, 0), (10, 0), (3, 40), (3, 5)]:
        ckpt.save(tmp_path, make_payload(epoch, step), keep=10)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "checkpoint-0002-000000.pt", "checkpoint-0003-000005.pt", "checkpoint-0003-000040.pt",
        "checkpoint-0010-000000.pt"]


def test_keeps_only_the_newest(tmp_path):
    for epoch in range(1, 6):
        ckpt.save(tmp_path, make_payload(epoch, 0), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0004-000000.pt", "checkpoint-0005-000000.pt"]


def test_round_trip_restores_states_and_rng(tmp_path):
    body = make_payload(4, 7)
    expected_next = torch.rand(3)  # what the generator gives after the saved state
    path = ckpt.save(tmp_path, body, keep=2)
    net, optimizer, scheduler, scaler = live_objects()
    epoch, step, history, partial, seconds = ckpt.resume(path, SETTINGS, net, optimizer, scheduler, scaler)
    assert (epoch, step, len(history), partial["samples"], seconds) == (4, 7, 3, 64.0, 3.0)
    for name, tensor in net.state_dict().items():
        assert torch.equal(body["model"][name], tensor)
    assert torch.equal(torch.rand(3), expected_next)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")
    body = make_payload(1, 0)
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(tmp_path, body, keep=2)
    assert list(tmp_path.iterdir()) == []


def test_other_settings_are_named_in_one_line(tmp_path):
    path = ckpt.save(tmp_path, make_payload(2, 0), keep=2)
    now = {**SETTINGS, "lr": 0.5, "seed": 7}
    with pytest.raises(BadInput) as err:
        ckpt.resume(path, now, *live_objects())
    message = str(err.value)
    assert "lr 1.0 -> 0.5" in message and "seed 1 -> 7" in message and "batch_size" not in message
    assert "--no-resume" in message and "\n" not in message


def test_refuses_a_checkpoint_of_another_model(tmp_path):
    body = make_payload(2, 0)
    body["signature"]["fc2.weight"] = [2, 128]
    path = ckpt.save(tmp_path, body, keep=2)
    with pytest.raises(BadInput, match="another model"):
        ckpt.resume(path, SETTINGS, *live_objects())


def test_refuses_foreign_and_unreadable_files(tmp_path):
    foreign = tmp_path / ckpt.checkpoint_name(1, 0)
    torch.save(Net().state_dict(), foreign)  # a plain state_dict is not a resumable checkpoint
    with pytest.raises(BadInput, match="not a checkpoint of this trainer"):
        ckpt.resume(foreign, SETTINGS, *live_objects())
    garbage = tmp_path / ckpt.checkpoint_name(2, 0)
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(BadInput, match="cannot read checkpoint"):
        ckpt.resume(garbage, SETTINGS, *live_objects())


def _wrong_optimizer_shapes():
    body = make_payload(2, 0)
    body["optimizer"]["state"][0]["square_avg"] = torch.zeros(3)
    return body


@pytest.mark.parametrize("body, why", [
    (make_payload(2, 0, model={"conv1.weight": torch.zeros(1)}), "Missing key"),
    (_wrong_optimizer_shapes(), "optimizer state does not fit"),
    (make_payload(3, 0, history=[]), "the history disagree"),
    (make_payload(2, -1), "the history disagree"),
    (make_payload(2, 0, partial={"loss_sum": "x", "samples": 1, "train_seconds": 0}), "could not convert"),
    (make_payload(2, 0, rng={}), "no 'torch'"),
])
def test_inconsistent_contents_are_refused_in_one_line(tmp_path, body, why):
    path = ckpt.save(tmp_path, body, keep=2)
    with pytest.raises(BadInput, match="is inconsistent") as err:
        ckpt.resume(path, SETTINGS, *live_objects())
    assert why in str(err.value) and "\n" not in str(err.value)
