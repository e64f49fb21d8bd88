"""kernels.c, compiled at start-up with the machine's C compiler and called through ctypes.

The CPU training step is limited by memory traffic: torch runs Adadelta as 11 element-wise
passes, and max-pool, ReLU, dropout and the flatten as separate passes with an int64 index tensor
in between. kernels.c does each in one pass. Compiling takes about a quarter of a second, for this
machine's instruction set (-march=native); where there is no C compiler (the Debian stand-in
training image has none) or the compile fails, the trainer runs torch's own operations instead,
with the same results up to float rounding. --fused-kernels off chooses torch's operations.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.c")
# -ffp-contract=off: the kernels' multiply-adds are fused exactly where torch's are (fmaf), no more
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC"]
PARALLEL_MIN = 65536  # elements: below this, starting OpenMP threads costs more than it saves
MAX_ROW = 4096  # kernels.c's MAX_ROW: pooled elements per row it keeps on the stack
COMPILE_TIMEOUT = 120

_c_long, _c_int, _c_float, _ptr = ctypes.c_long, ctypes.c_int, ctypes.c_float, ctypes.c_void_p


def _openmp_runtime() -> str | None:
    """Which OpenMP runtime this process has loaded (torch brings one), from /proc/self/maps."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for name in ("libgomp", "libiomp5", "libomp"):
        if f"/{name}" in maps:
            return name
    return None


def _compiler() -> str | None:
    wanted = os.environ.get("CC")
    if wanted:
        return shutil.which(wanted)
    return next((path for path in map(shutil.which, ("cc", "gcc", "clang")) if path), None)


class Kernels:
    """The compiled kernels, with torch tensors in and out.

    Stateless and shared by the whole process: a copy is the same object, and unpickling (a pickled
    FastNet or optimizer) loads them in the new process, or gives None where they cannot be built."""

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return _loaded, ()

    def __init__(self, lib: ctypes.CDLL, description: str):
        self.description = description
        self._adadelta = lib.adadelta_step
        self._adadelta.argtypes = [_ptr, _ptr, _ptr, _ptr, _c_long, _c_float, _c_float, _c_float, _c_float, _c_int]
        self._adadelta.restype = None
        self._pool = lib.pool_relu_dropout
        self._pool.argtypes = [_ptr, _ptr, _ptr, _ptr, _c_long, _c_int, _c_int, _c_float,
                               _c_long, _c_long, _c_long, _c_long, _c_int]
        self._pool.restype = None
        self._pool_backward = lib.pool_relu_dropout_backward
        self._pool_backward.argtypes = [_ptr, _ptr, _ptr, _c_float, _c_long, _c_long, _c_long, _c_long, _c_int]
        self._pool_backward.restype = None

    @staticmethod
    def adadelta_fits(*tensors) -> bool:
        """Dense float32 CPU tensors laid out alike, so that element i is the same weight in each."""
        first = tensors[0]
        return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.shape == first.shape
                   and t.stride() == first.stride() for t in tensors) \
            and (first.is_contiguous() or (first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last)))

    def adadelta(self, param, grad, square_avg, acc_delta, rho: float, eps: float, lr: float) -> None:
        """One torch.optim.Adadelta step of param in place (see kernels.c)."""
        n = param.numel()
        self._adadelta(param.data_ptr(), grad.data_ptr(), square_avg.data_ptr(), acc_delta.data_ptr(),
                       n, rho, 1 - rho, eps, -lr, int(n >= PARALLEL_MIN))

    @staticmethod
    def pool_fits(x) -> bool:
        """What pool_relu_dropout takes: a CPU float32/bfloat16 (n, c, h, w) tensor stored
        channels_last, h and w even, and a pooled row (w/2 * c) within the kernel's MAX_ROW."""
        return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16)
                and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.shape[3] // 2 * x.shape[1] <= MAX_ROW
                and x.is_contiguous(memory_format=torch.channels_last))

    def pool_relu_dropout(self, x, random, bits: int, level: int, scale: float):
        """(y, code): y = dropout(relu(max_pool2d(x, 2))) flattened in (c, h, w) order; code for backward.

        random: uint8 tensor of random bytes in fast_net.keep_mask's layout, or None (no dropout)."""
        n, c, h, w = x.shape
        y = torch.empty((n, c * (h // 2) * (w // 2)), dtype=x.dtype)
        code = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8)
        self._pool(x.data_ptr(), y.data_ptr(), code.data_ptr(),
                   None if random is None else random.data_ptr(), 0 if random is None else random.numel(),
                   bits, level, scale, n, c, h, w, int(x.dtype == torch.bfloat16))
        return y, code

    def pool_relu_dropout_backward(self, grad, code, scale: float, shape, dtype):
        """The gradient for pool_relu_dropout's x, channels_last; grad is y's gradient."""
        n, c, h, w = shape
        grad = grad.to(dtype).contiguous()
        grad_x = torch.empty((n, c, h, w), dtype=dtype, memory_format=torch.channels_last)
        self._pool_backward(grad.data_ptr(), grad_x.data_ptr(), code.data_ptr(), scale, n, c, h, w,
                            int(dtype == torch.bfloat16))
        return grad_x


def cache_dir() -> Path:
    """Where compiled kernels are kept between runs: $XDG_CACHE_HOME (or ~/.cache)/mnist-trainer."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-trainer"


def _toolchain(compiler: str) -> bytes:
    """What a cached library depends on besides its flags: the source, the compiler and (for
    -march=native) the CPU. Read once per compile_kernels(), whatever the number of attempts."""
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30,
                                 check=False).stdout.partition("\n")[0]
    except (OSError, subprocess.TimeoutExpired):
        version = ""
    try:
        cpu = next((line for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
                    if line.startswith("flags")), "")
    except OSError:
        cpu = ""
    parts = (os.path.realpath(compiler), version, platform.machine(), cpu)
    return SOURCE.read_bytes() + b"".join(b"\0" + part.encode() for part in parts)


def _build(compiler: str, flags: list, toolchain: bytes, folder: Path) -> tuple[ctypes.CDLL | None, str]:
    """(the library, "cached" or "compiled"), or (None, the error), from or into folder."""
    key = hashlib.sha256(toolchain + b"".join(b"\0" + flag.encode() for flag in flags)).hexdigest()[:24]
    target = folder / f"kernels-{key}.so"
    if target.exists():
        try:
            return ctypes.CDLL(str(target)), "cached"
        except OSError:
            pass  # unreadable or foreign: compile it again
    partial = folder / f".{target.name}.{os.getpid()}.tmp"
    try:
        proc = subprocess.run([compiler, *flags, "-o", str(partial), str(SOURCE), "-lm"],
                              capture_output=True, text=True, timeout=COMPILE_TIMEOUT, check=False)
        if proc.returncode != 0:
            return None, (proc.stderr.strip().splitlines() or ["failed"])[0]
        os.replace(partial, target)  # atomic: another process never loads half a file
        return ctypes.CDLL(str(target)), "compiled"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    finally:
        partial.unlink(missing_ok=True)


def compile_kernels() -> tuple[Kernels | None, str]:
    """(kernels, how they were built and whether from the cache), or (None, why not). Never raises.

    The library is kept in cache_dir() and reused while the source, compiler and CPU are the same;
    where that folder is not writable, it is built in a temporary folder each time."""
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler (cc, gcc or clang); using torch's operations"
    # Sharing torch's OpenMP runtime (libgomp resolves to the copy torch loaded) gives one thread
    # pool; a second runtime would oversubscribe the cores, so anything else compiles serial.
    attempts = [FLAGS + ["-fopenmp"], FLAGS] if _openmp_runtime() == "libgomp" else [FLAGS]
    attempts += [[flag for flag in flags if flag != "-march=native"] for flags in list(attempts)]
    error, toolchain = "", _toolchain(compiler)
    with tempfile.TemporaryDirectory(prefix="mnist-kernels-") as scratch:
        folder = cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # not creatable: the writability check below sends the build to scratch
        if not os.access(folder, os.W_OK):
            folder = Path(scratch)
        for flags in attempts:
            lib, how = _build(compiler, flags, toolchain, folder)  # stays mapped once its file is gone
            if lib is None:
                error = how
                continue
            threads = "OpenMP threads" if "-fopenmp" in flags else "one thread"
            description = f"{Path(compiler).name} {' '.join(flags)} ({threads}, {how})"
            return Kernels(lib, description), description
    return None, f"compiling {SOURCE.name} failed ({error[:200]}); using torch's operations"


@functools.cache
def load() -> tuple[Kernels | None, str]:
    """compile_kernels(), once per process."""
    return compile_kernels()


def _loaded() -> Kernels | None:
    return load()[0]
