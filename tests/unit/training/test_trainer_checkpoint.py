"""mnist_trainer.checkpoint: atomic files, ordering, pruning, and refusing foreign checkpoints."""
from __future__ import annotations

import random

import pytest
import torch
from torch import optim
from torch.optim.lr_scheduler import StepLR

from mnist_trainer import checkpoint as ckpt
from mnist_trainer.errors import BadInput
from mnist_trainer.model import Net


def make_payload(epoch, step):
    net = Net()
    optimizer = optim.Adadelta(net.parameters(), lr=1.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    return net, ckpt.payload(net.state_dict(), optimizer, scheduler, epoch, step, {"history": []})


def test_names_sort_by_progress(tmp_path):
    for epoch, step in [(2, 0), (10, 0), (3, 40), (3, 5)]:
        ckpt.save(tmp_path, make_payload(epoch, step)[1], keep=10)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "checkpoint-0002-000000.pt", "checkpoint-0003-000005.pt", "checkpoint-0003-000040.pt",
        "checkpoint-0010-000000.pt"]


def test_keeps_only_the_newest(tmp_path):
    for epoch in range(1, 6):
        ckpt.save(tmp_path, make_payload(epoch, 0)[1], keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0004-000000.pt", "checkpoint-0005-000000.pt"]


def test_round_trip_with_rng_state(tmp_path):
    net, body = make_payload(4, 7)
    random.random()
    expected_next = torch.rand(3)
    torch.set_rng_state(body["rng"]["torch"])
    random.setstate(body["rng"]["python"])
    python_next = random.random()
    path = ckpt.save(tmp_path, body, keep=2)
    loaded = ckpt.load(path, net.state_dict())
    assert (loaded["epoch"], loaded["step"]) == (4, 7)
    for name, tensor in net.state_dict().items():
        assert torch.equal(loaded["model"][name], tensor)
    ckpt.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected_next)
    assert random.random() == python_next


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(tmp_path, make_payload(1, 0)[1], keep=2)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_checkpoint_of_another_model(tmp_path):
    net, body = make_payload(2, 0)
    body["signature"]["fc2.weight"] = [2, 128]
    path = ckpt.save(tmp_path, body, keep=2)
    with pytest.raises(BadInput, match="another model"):
        ckpt.load(path, net.state_dict())


def test_refuses_foreign_and_unreadable_files(tmp_path):
    net = Net()
    foreign = tmp_path / ckpt.checkpoint_name(1, 0)
    torch.save(net.state_dict(), foreign)  # a plain state_dict is not a resumable checkpoint
    with pytest.raises(BadInput, match="not a checkpoint of this trainer"):
        ckpt.load(foreign, net.state_dict())
    garbage = tmp_path / ckpt.checkpoint_name(2, 0)
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(BadInput, match="cannot read checkpoint"):
        ckpt.load(garbage, net.state_dict())
