"""FastNet and the cache-sized Adadelta compute what Net and torch.optim.Adadelta compute."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import optim
from torch.nn import functional as F

from mnist_trainer import fast_adadelta, loop, malloc_tunables, runtime
from mnist_trainer.fast_adadelta import Adadelta
from mnist_trainer.fast_net import FastNet, keep_mask, relu_dropout
from mnist_trainer.model import Net

TRAINING = Path(__file__).resolve().parents[3] / "training"


def twin_nets(memory_format=torch.contiguous_format):
    torch.manual_seed(3)
    net = Net()
    fast = FastNet()
    fast.load_state_dict(net.state_dict())
    return net.to(memory_format=memory_format), fast.to(memory_format=memory_format)


def batch(n=16, memory_format=torch.contiguous_format):
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(n, 1, 28, 28, generator=generator).contiguous(memory_format=memory_format)
    return images, torch.randint(0, 10, (n,), generator=generator)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_same_outputs_and_gradients_as_net(memory_format):
    net, fast = twin_nets(memory_format)
    images, labels = batch(memory_format=memory_format)
    for model in (net, fast):
        model.eval()  # dropout off: the rest of the function must match exactly
        F.nll_loss(model(images), labels).backward()
    with torch.no_grad():
        assert torch.allclose(net(images), fast(images), atol=1e-6)
    for (name, a), b in zip(net.named_parameters(), fast.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


def test_state_dict_is_nets():
    net, fast = twin_nets()
    assert list(fast.state_dict()) == list(net.state_dict())
    Net().load_state_dict(fast.state_dict())


def test_channels_last_gradient_reaches_conv_in_channels_last():
    fast = twin_nets(torch.channels_last)[1]
    images, labels = batch(memory_format=torch.channels_last)
    F.nll_loss(fast(images), labels).backward()
    assert fast.conv2.weight.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("p", [0.25, 0.5, 0.3])
def test_keep_mask_probability(p):
    torch.manual_seed(0)
    mask = keep_mask((64, 12, 12, 64), p, torch.device("cpu"))
    assert mask.dtype == torch.uint8 and mask.shape == (64, 12, 12, 64)
    assert set(mask.unique().tolist()) == {0, 1}
    # 589,824 draws: the standard error of the mean is under 0.0007
    assert abs(mask.float().mean().item() - (1 - p)) < 0.004


def test_keep_mask_follows_the_seed():
    torch.manual_seed(9)
    first = keep_mask((1000,), 0.25, torch.device("cpu"))
    torch.manual_seed(9)
    assert torch.equal(first, keep_mask((1000,), 0.25, torch.device("cpu")))


def test_relu_dropout_is_inverted_dropout_after_relu():
    torch.manual_seed(1)
    x = torch.randn(64, 64, 12, 12).contiguous(memory_format=torch.channels_last)
    out = relu_dropout(x, 0.25, training=True)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.75)  # survivors scaled by 1/(1-p)
    assert not (kept & (x <= 0)).any()  # ReLU applied
    share = kept.sum().item() / (x > 0).sum().item()
    assert abs(share - 0.75) < 0.01
    assert torch.equal(relu_dropout(x, 0.25, training=False), F.relu(x))
    assert not relu_dropout(x, 1.0, training=True).any()


def run_optimizer(factory, steps=3):
    torch.manual_seed(0)
    big = torch.nn.Parameter(torch.randn(600_000))  # more than one slice
    conv = torch.nn.Parameter(torch.randn(64, 32, 3, 3).contiguous(memory_format=torch.channels_last))
    small = torch.nn.Parameter(torch.randn(10))
    params = [big, conv, small]
    optimizer = factory(params)
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator).contiguous(
                memory_format=torch.channels_last if param.dim() == 4 else torch.contiguous_format)
        optimizer.step()
    return params, optimizer


def test_adadelta_matches_torch_bit_for_bit(monkeypatch):
    monkeypatch.setattr(fast_adadelta, "CHUNK", 100_000)
    ours, our_opt = run_optimizer(lambda p: Adadelta(p, lr=1.0))
    theirs, their_opt = run_optimizer(lambda p: optim.Adadelta(p, lr=1.0, foreach=False))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    ours_state, theirs_state = our_opt.state_dict(), their_opt.state_dict()
    for key, state in theirs_state["state"].items():
        for name, value in state.items():
            assert torch.equal(ours_state["state"][key][name], value), name


def test_adadelta_state_dict_loads_into_torchs():
    ours = run_optimizer(lambda p: Adadelta(p, lr=1.0))[1]
    params, theirs = run_optimizer(lambda p: optim.Adadelta(p, lr=1.0), steps=0)
    theirs.load_state_dict(ours.state_dict())
    assert float(theirs.state[params[0]]["step"]) == 3


def test_adadelta_defers_unusual_settings_to_torch():
    ours = run_optimizer(lambda p: Adadelta(p, lr=0.5, weight_decay=0.1))[0]
    theirs = run_optimizer(lambda p: optim.Adadelta(p, lr=0.5, weight_decay=0.1))[0]
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_keep_freed_memory_takes_effect_on_glibc():
    assert runtime.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_flush_denormals_zeroes_denormal_arithmetic():
    try:
        if not runtime.flush_denormals():
            pytest.skip("this CPU has no flush-to-zero")
        assert torch.tensor([1e-39]).mul(1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
    assert torch.tensor([1e-39]).mul(1.0).item() != 0.0


def test_cpu_evaluation_slices_change_nothing(monkeypatch):
    fast = twin_nets(torch.channels_last)[1]
    images, labels = batch(n=450, memory_format=torch.channels_last)
    cpu = torch.device("cpu")
    sliced = loop.evaluate(fast, images, labels, 1000, cpu, amp=False)
    monkeypatch.setattr(loop, "CPU_EVAL_SLICE", 10_000)
    whole = loop.evaluate(fast, images, labels, 1000, cpu, amp=False)
    assert sliced[1] == whole[1]
    assert sliced[0] == pytest.approx(whole[0], rel=1e-5)


SHOW_TUNABLES = ("import os, sys; sys.path.insert(0, sys.argv[1]); "
                 "from mnist_trainer.malloc_tunables import reexec_with_malloc_tunables as r; "
                 "r(); print(os.environ.get('GLIBC_TUNABLES'), sys.argv[2])")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_reexec_sets_tunables_and_keeps_the_arguments():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", SHOW_TUNABLES, str(TRAINING), "arg-kept"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    assert proc.stdout.split() == [malloc_tunables.TUNABLES, "arg-kept"]


def test_reexec_leaves_a_users_tunables_alone():
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.arena_max=1")
    proc = subprocess.run([sys.executable, "-c", SHOW_TUNABLES, str(TRAINING), "x"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    assert proc.stdout.split() == ["glibc.malloc.arena_max=1", "x"]
