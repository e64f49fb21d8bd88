"""Device, mixed precision, threads and torch.distributed: the parts that differ per machine.

Everything here works on torch 1.13 (Debian bookworm) and current torch 2.x; newer APIs are guarded.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import BadInput


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"--device cuda but no CUDA GPU is available (torch {torch.__version__}); "
                       "use --device cpu or auto")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if local_rank >= torch.cuda.device_count():
            raise BadInput(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            pass
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast context for device, or a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    except (AttributeError, RuntimeError, TypeError):
        if device.type == "cpu":  # very old torch: the CPU-specific spelling
            return torch.cpu.amp.autocast(dtype=torch.bfloat16)
        return torch.cuda.amp.autocast(dtype=torch.bfloat16)


def choose_amp(requested: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast. 'auto' uses it only where the hardware is fast at it."""
    if requested == "off":
        return False
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = _cpu_has_bf16()
    if requested == "bf16" and not supported and device.type == "cuda":
        raise BadInput("--amp bf16 but this GPU does not support bfloat16")
    if requested == "auto" and not supported:
        return False
    # A tiny probe: some builds list the dtype yet have no bf16 kernel for an op the model uses.
    try:
        probe = torch.nn.Conv2d(1, 2, 3).to(device)
        with autocast(device, True):
            probe(torch.zeros(1, 1, 5, 5, device=device)).sum()
    except RuntimeError as exc:
        if requested == "bf16":
            raise BadInput(f"--amp bf16 is not usable here: {str(exc).splitlines()[0]}") from None
        return False
    return True


def inference_mode():
    """torch.inference_mode where it exists (1.9+), else no_grad."""
    factory = getattr(torch, "inference_mode", None)
    return factory() if factory is not None else torch.no_grad()


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse instead of handing them back to the kernel.

    A training step allocates and frees activations of a few MB each. Past glibc's mmap threshold
    each of those is a fresh mapping, so every step page-faults its memory in again: about 5,500
    minor faults per step of this model, a fifth to a third of the CPU step time. A fixed 32 MB threshold and
    a high trim threshold keep them in the heap. Returns False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def flush_denormals() -> bool:
    """Treat float32 denormals as zero on the CPU (x86 FTZ/DAZ; False where unsupported).

    Adadelta's running averages decay by rho = 0.9 every step. For weights whose gradient stays
    zero (fc1 inputs that ReLU keeps at zero), they reach the denormal range after about 700 steps,
    and half of fc1's state is denormal soon after. Arithmetic on denormals is many times slower on
    x86: the step time grew by a third within 1,000 steps here. Values below 1.2e-38 become zero,
    which changes nothing a float32 model can see. Set per thread, so call it before torch starts
    its worker threads (they inherit it).
    """
    # numpy (1.2x) warns that the smallest subnormal "is zero" when it builds finfo under FTZ
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal", category=UserWarning)
    return bool(torch.set_flush_denormal(True))


def set_threads(threads: int) -> None:
    """threads > 0 pins intra-op threads; 0 keeps torch's default (one per core)."""
    if threads > 0:
        torch.set_num_threads(threads)


class Distributed:
    """World size, rank and collectives; a single process when not started by torchrun."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.enabled:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when flag is true on any rank (so all ranks stop at the same step)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def sum(self, values: list, device: torch.device) -> list:
        """Element-wise sum of a list of numbers over all ranks."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def max(self, value: float, device: torch.device) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
