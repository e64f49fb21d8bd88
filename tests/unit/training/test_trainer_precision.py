"""mnist_trainer.device: mixed precision from the hardware, with the compute capability injected."""
from __future__ import annotations

import pytest
import torch

from mnist_trainer import device as dev
from mnist_trainer.errors import BadInput


@pytest.mark.parametrize("capability, mode", [
    ((7, 5), "fp16"),   # T4 (g4dn): torch.cuda.is_bf16_supported() says True, but bf16 is emulated
    ((7, 0), "fp16"),   # V100 (p3)
    ((8, 0), "bf16"),   # A100 (p4d)
    ((8, 6), "bf16"),   # A10G (g5)
    ((8, 9), "bf16"),   # L4 (g6)
    ((9, 0), "bf16"),   # H100 (p5)
    ((10, 0), "bf16"),  # B200 (p6-b200)
    ((6, 1), "off"),    # Pascal: no fast half precision
])
def test_auto_follows_the_compute_capability(capability, mode):
    chosen, reason = dev.choose_precision("auto", "cuda", capability)
    assert chosen == mode
    assert f"compute capability {capability[0]}.{capability[1]}" in reason


@pytest.mark.parametrize("forced", ["bf16", "fp16", "off"])
def test_amp_forces_any_mode(forced):
    for capability in ((7, 5), (8, 0), (9, 0)):
        assert dev.choose_precision(forced, "cuda", capability) == (forced, f"--amp {forced}")
    assert dev.choose_precision(forced, "cpu", cpu_bf16=False)[0] == forced


def test_cpu_uses_bf16_only_where_it_is_native():
    assert dev.choose_precision("auto", "cpu", cpu_bf16=True) == ("bf16", "CPU with native bf16")
    assert dev.choose_precision("auto", "cpu", cpu_bf16=False) == ("off", "CPU without native bf16")
    assert dev.choose_precision("auto", "mps")[0] == "off"


@pytest.mark.parametrize("capability, mode", [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_a_cuda_device_is_asked_for_its_capability(monkeypatch, capability, mode):
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: asked.append(d) or capability)
    assert dev.device_precision("auto", torch.device("cuda", 0))[0] == mode
    assert asked == [torch.device("cuda", 0)]


def test_autocast_dtype_per_mode():
    cpu = torch.device("cpu")
    with dev.autocast(cpu, "bf16"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with dev.autocast(cpu, "fp16"):
        assert torch.get_autocast_dtype("cpu") == torch.float16
    with dev.autocast(cpu, "off"):
        assert not torch.is_autocast_enabled("cpu")


def test_cpu_flags_decide_native_bf16(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    real_path = dev.Path
    monkeypatch.setattr(dev, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    cpuinfo.write_text("flags : fpu sse avx2 avx512f\n")
    assert dev.cpu_has_bf16() is False
    cpuinfo.write_text("flags : fpu avx512f avx512_bf16\n")
    assert dev.cpu_has_bf16() is True
    cpuinfo.write_text("Features : fp asimd bf16 i8mm\n")  # Graviton3
    assert dev.cpu_has_bf16() is True


@pytest.mark.skipif(torch.accelerator.is_available(), reason="this machine has an accelerator")
def test_device_choice_without_an_accelerator():
    assert dev.pick_device("auto", 0) == torch.device("cpu")
    assert dev.pick_device("cpu", 0) == torch.device("cpu")
    with pytest.raises(BadInput, match="--device cuda but torch .* sees no CUDA GPU"):
        dev.pick_device("cuda", 0)
