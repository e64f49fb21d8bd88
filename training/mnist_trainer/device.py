"""What differs per machine: the device, the precision, and the processes of a torchrun job."""
import os
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import BadInput


def pick_device(requested: str, local_rank: int) -> torch.device:
    """auto: the accelerator torch sees (CUDA, ROCm, XPU, MPS) or the CPU; one device per torchrun rank."""
    found = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if requested == "cpu" or (requested == "auto" and found is None):
        return torch.device("cpu")
    if found is None or requested not in ("auto", found.type):
        raise BadInput(f"--device {requested} but torch {torch.__version__} sees "
                       f"{'no CUDA GPU' if found is None else 'only ' + found.type}; use --device cpu or auto")
    if local_rank >= torch.accelerator.device_count():
        raise BadInput(f"LOCAL_RANK {local_rank} but only {torch.accelerator.device_count()} {found.type} device(s)")
    device = torch.device(found.type, local_rank)
    getattr(torch, found.type).set_device(device)
    return device


def cpu_has_bf16() -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16, AMX, Arm BF16); emulated it is slower."""
    cpuinfo = Path("/proc/cpuinfo")  # Linux, where the containers run
    flags = set(cpuinfo.read_text(errors="replace").split()) if cpuinfo.is_file() else set()
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def choose_precision(requested: str, device_type: str, capability=None, cpu_bf16=False):
    """(mode, reason), mode 'bf16', 'fp16' (with a gradient scaler) or 'off', from the compute capability:
    not torch.cuda.is_bf16_supported(), True on a T4 (7.5) that only emulates bf16."""
    if requested != "auto":
        return requested, f"--amp {requested}"
    if device_type == "cpu":
        return ("bf16", "CPU with native bf16") if cpu_bf16 else ("off", "CPU without native bf16")
    if device_type != "cuda" or capability is None:
        return "off", f"no mixed-precision rule for {device_type}"
    name = "compute capability %d.%d" % tuple(capability)
    if tuple(capability) >= (8, 0):
        return "bf16", f"{name}: native bf16"
    if capability[0] == 7:
        return "fp16", f"{name}: fp16 tensor cores, bf16 only emulated"
    return "off", f"{name}: no fast half precision"


def device_precision(requested: str, device: torch.device):
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return choose_precision(requested, device.type, capability, device.type == "cpu" and cpu_has_bf16())


def autocast(device: torch.device, mode: str):
    return torch.autocast(device.type, dtype=torch.float16 if mode == "fp16" else torch.bfloat16, enabled=mode != "off")


class World:
    """The processes of a torchrun job (WORLD_SIZE > 1), or just this one."""

    def __init__(self):
        self.size, self.rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled, self.is_main = self.size > 1, self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.enabled:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def reduce(self, values: list, device, op="sum") -> list:
        """Element-wise sum (or max) of a list of numbers over all ranks."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return tensor.tolist()

    def any(self, flag: bool, device) -> bool:
        """True on every rank when true on any, so that all ranks stop at the same batch."""
        return self.reduce([float(flag)], device, "max")[0] > 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
