"""kernels.c: compiled here, it computes what the torch path computes; without a compiler, torch's path runs."""
from __future__ import annotations

import copy
import pickle
import shutil

import pytest
import torch
from torch import optim
from torch.nn import functional as F

from mnist_trainer import native
from mnist_trainer.fast_adadelta import Adadelta
from mnist_trainer.fast_net import FastNet, flatten_nchw, native_pool_relu_dropout, relu_dropout

needs_compiler = pytest.mark.skipif(native._compiler() is None, reason="no C compiler on this machine")


@pytest.fixture(scope="module")
def kernels():
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    compiled, how = native.load()
    assert compiled is not None, how
    return compiled


def torch_pool_relu_dropout(x, p, training):
    return flatten_nchw(relu_dropout(F.max_pool2d(x, 2), p, training))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p, training", [(0.25, True), (0.5, True), (0.25, False)])
def test_pool_relu_dropout_equals_the_torch_path_bit_for_bit(kernels, dtype, p, training):
    source = torch.randn(16, 64, 24, 24, generator=torch.Generator().manual_seed(2))
    source[0, 0, :2, :2] = 1.5  # a tie: max_pool2d takes the first of equal maxima
    grad = torch.randn(16, 64 * 12 * 12, generator=torch.Generator().manual_seed(4)).to(dtype)
    results = []
    for fused in (False, True):
        x = source.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
        torch.manual_seed(7)  # the same random bits for both
        y = native_pool_relu_dropout(kernels, x, p, training) if fused else torch_pool_relu_dropout(x, p, training)
        y.backward(grad)
        results.append((y.detach(), x.grad))
    (y_torch, grad_torch), (y_fused, grad_fused) = results
    assert y_fused.dtype == dtype and y_fused.shape == (16, 9216) and y_fused.is_contiguous()
    assert torch.equal(y_fused, y_torch)
    assert grad_fused.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(grad_fused, grad_torch)
    if training:  # dropout did drop: about p of the positive pooled values
        survivors = (y_fused != 0).sum().item() / F.max_pool2d(source.to(dtype), 2).gt(0).sum().item()
        assert abs(survivors - (1 - p)) < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_nan_comes_through_as_in_torch(kernels, dtype):
    source = torch.randn(2, 64, 24, 24, generator=torch.Generator().manual_seed(2))
    source[1, 3, 4, 5] = float("nan")  # pooled element (1, 3, 2, 2): NaN wins max_pool2d and passes ReLU
    grad = torch.randn(2, 9216, generator=torch.Generator().manual_seed(4)).to(dtype)
    results = []
    for fused in (False, True):
        x = source.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
        y = native_pool_relu_dropout(kernels, x, 0.25, False) if fused else torch_pool_relu_dropout(x, 0.25, False)
        y.backward(grad)
        results.append((y.detach(), x.grad))
    (y_torch, grad_torch), (y_fused, grad_fused) = results
    assert y_fused.view(2, 64, 12, 12)[1, 3, 2, 2].isnan()
    assert torch.equal(y_fused.isnan(), y_torch.isnan()) and y_fused.isnan().sum() == 1
    assert torch.equal(y_fused.nan_to_num(), y_torch.nan_to_num())
    assert torch.equal(grad_fused, grad_torch)  # the gradient goes to the NaN's place


def test_pool_relu_dropout_declines_what_it_does_not_cover(kernels):
    odd = torch.randn(2, 4, 5, 6).contiguous(memory_format=torch.channels_last)
    assert native_pool_relu_dropout(kernels, odd, 0.25, True) is None
    nchw = torch.randn(2, 4, 6, 6)
    assert native_pool_relu_dropout(kernels, nchw, 0.25, True) is None
    not_a_bit_fraction = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    assert native_pool_relu_dropout(kernels, not_a_bit_fraction, 0.3, True) is None
    too_wide = torch.randn(1, 64, 2, 2 * (native.MAX_ROW // 64 + 1)).contiguous(memory_format=torch.channels_last)
    assert native_pool_relu_dropout(kernels, too_wide, 0.25, True) is None


def test_the_row_limit_is_the_kernels():
    assert f"#define MAX_ROW {native.MAX_ROW} " in native.SOURCE.read_text()


@pytest.mark.parametrize("amp", [False, True])
def test_fastnet_with_kernels_trains_like_fastnet_without(kernels, amp):
    torch.manual_seed(3)
    plain = FastNet().to(memory_format=torch.channels_last)
    fused = FastNet(kernels=kernels).to(memory_format=torch.channels_last)
    fused.load_state_dict(plain.state_dict())
    images = torch.randn(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (32,))
    outputs = []
    for model in (plain, fused):
        torch.manual_seed(11)  # the same dropout bits
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            output = model(images)
        F.nll_loss(output, labels).backward()
        outputs.append(output)
    assert torch.equal(outputs[0], outputs[1])
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
        assert torch.equal(a.grad, b.grad), name


def optimizer_run(factory, steps=4):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(300_000)),
              torch.nn.Parameter(torch.randn(64, 32, 3, 3).contiguous(memory_format=torch.channels_last)),
              torch.nn.Parameter(torch.randn(10))]
    optimizer = factory(params)
    optimizer.initial = [param.detach().clone() for param in params]
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator).mul_(0.01).contiguous(
                memory_format=torch.channels_last if param.dim() == 4 else torch.contiguous_format)
        optimizer.step()
    return params, optimizer


def test_fused_adadelta_follows_torchs_step(kernels):
    ours, our_opt = optimizer_run(lambda p: Adadelta(p, lr=1.0, kernels=kernels))
    theirs, their_opt = optimizer_run(lambda p: optim.Adadelta(p, lr=1.0, foreach=False))
    for a, b, start in zip(ours, theirs, our_opt.initial):
        # torch's sqrt is not correctly rounded; the kernel's is: at most a few float32 ulps apart
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)
        assert (a != start).float().mean() > 0.99  # the steps did move the weights
    for key, state in their_opt.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.allclose(our_opt.state_dict()["state"][key][name], value, rtol=1e-5, atol=1e-12), name
    params, fresh = optimizer_run(lambda p: optim.Adadelta(p, lr=1.0), steps=0)
    fresh.load_state_dict(our_opt.state_dict())
    assert float(fresh.state[params[0]]["step"]) == 4


def test_fused_adadelta_is_deterministic(kernels):
    first = optimizer_run(lambda p: Adadelta(p, lr=1.0, kernels=kernels))[0]
    second = optimizer_run(lambda p: Adadelta(p, lr=1.0, kernels=kernels))[0]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_no_compiler_means_torchs_operations(monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-here")
    kernels, why = native.compile_kernels()
    assert kernels is None and "no C compiler" in why


@needs_compiler
def test_a_failing_compile_is_reported_not_raised(monkeypatch, tmp_path):
    broken = tmp_path / "kernels.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(native, "SOURCE", broken)
    kernels, why = native.compile_kernels()
    assert kernels is None and why.startswith("compiling kernels.c failed")


@needs_compiler
def test_compiled_kernels_are_cached_per_source_and_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first, how = native.compile_kernels()
    assert first is not None and how.endswith(", compiled)"), how
    libraries = list((tmp_path / "mnist-trainer").glob("kernels-*.so"))
    assert len(libraries) == 1
    second, how = native.compile_kernels()
    assert second is not None and how.endswith(", cached)"), how
    changed = tmp_path / "kernels.c"
    changed.write_text(native.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(native, "SOURCE", changed)
    assert native.compile_kernels()[1].endswith(", compiled)")  # a new source is a new library
    assert len(list((tmp_path / "mnist-trainer").glob("kernels-*.so"))) == 2
    assert not list((tmp_path / "mnist-trainer").glob(".*.tmp"))


@needs_compiler
def test_an_unwritable_cache_still_compiles(monkeypatch, tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    kernels, how = native.compile_kernels()
    assert kernels is not None, how


@needs_compiler
def test_load_compiles_once_per_process(monkeypatch):
    first = native.load()
    monkeypatch.setattr(native, "compile_kernels", lambda: pytest.fail("compiled again"))
    assert native.load() is first


def test_models_and_optimizers_with_kernels_copy_and_pickle(kernels):
    net = FastNet(kernels=kernels)
    optimizer = Adadelta(net.parameters(), lr=1.0, kernels=kernels)
    assert copy.deepcopy(net).kernels is kernels
    assert copy.deepcopy(optimizer).kernels is kernels
    assert pickle.loads(pickle.dumps(net)).kernels is kernels  # same process: the loaded ones


def test_loading_an_optimizer_state_keeps_the_kernels(kernels):
    params, ours = optimizer_run(lambda p: Adadelta(p, lr=1.0, kernels=kernels))
    fresh = Adadelta(params, lr=1.0, kernels=kernels)
    fresh.load_state_dict(ours.state_dict())  # torch's load_state_dict goes through __setstate__
    assert fresh.kernels is kernels


def test_compiler_is_found_on_path_or_from_cc(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    assert native._compiler() == next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)
