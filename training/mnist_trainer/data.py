"""MNIST through torchvision, decoded once into normalized tensors that stay in memory.

The example runs ToTensor + Normalize on every sample of every epoch through a DataLoader. The
same arithmetic done once on the whole uint8 tensor gives identical values, and batching is then
an index into a tensor that already lives on the training device.
"""
from __future__ import annotations

import struct
from pathlib import Path

import torch
from torchvision import datasets

from .errors import BadInput

MEAN, STD = 0.1307, 0.3081  # the example's Normalize((0.1307,), (0.3081,))
# name -> (IDX magic, shape of one item); torchvision reads the uncompressed files of both splits
RAW_FILES = {
    "train-images-idx3-ubyte": (0x00000803, (28, 28)),
    "train-labels-idx1-ubyte": (0x00000801, ()),
    "t10k-images-idx3-ubyte": (0x00000803, (28, 28)),
    "t10k-labels-idx1-ubyte": (0x00000801, ()),
}


def raw_folder(data_dir: Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def check_idx(path: Path, magic: int, item_shape: tuple) -> int:
    """Validate an IDX file's header against its size; return its item count or raise BadInput."""
    ndim = 1 + len(item_shape)
    header_len = 4 + 4 * ndim
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(header_len)
    if len(header) < header_len:
        raise BadInput(f"corrupt MNIST file {path}: only {size} bytes, shorter than an IDX header")
    found = struct.unpack(">I", header[:4])[0]
    if found != magic:
        raise BadInput(f"corrupt MNIST file {path}: IDX magic {found:#010x}, expected {magic:#010x}")
    dims = struct.unpack(f">{ndim}I", header[4:])
    if tuple(dims[1:]) != tuple(item_shape):
        raise BadInput(f"corrupt MNIST file {path}: item shape {tuple(dims[1:])}, expected {item_shape}")
    expected = header_len + dims[0] * max(1, _prod(item_shape))
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise BadInput(f"corrupt MNIST file {path}: {what} ({size} bytes, header says {expected})")
    return dims[0]


def _prod(shape) -> int:
    result = 1
    for dim in shape:
        result *= dim
    return result


def check_raw_files(data_dir: Path, download: bool) -> None:
    """Fail early and clearly on missing or corrupt files (torchvision would assert or crash)."""
    raw = raw_folder(data_dir)
    missing = [name for name in RAW_FILES if not (raw / name).is_file()]
    if missing and not download:
        raise BadInput(
            f"MNIST data not found in {raw} (missing {', '.join(missing)}); make a split with "
            f"training/make_mnist_split.py --dest {data_dir}, or drop --no-download"
        )
    for name, (magic, item_shape) in RAW_FILES.items():
        if (raw / name).is_file():
            check_idx(raw / name, magic, item_shape)


def load_split(data_dir: Path, train: bool, download: bool, limit: int = 0):
    """(images uint8 [N, 28, 28], labels int64 [N]) of one split, read by torchvision."""
    try:
        dataset = datasets.MNIST(str(data_dir), train=train, download=download)
    except (RuntimeError, OSError, ValueError, AssertionError) as exc:
        # torchvision raises RuntimeError for "not found" and failed downloads
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"cannot load MNIST from {data_dir}: {message}") from None
    images, labels = dataset.data, dataset.targets.long()
    if len(images) != len(labels):
        raise BadInput(f"MNIST in {data_dir}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise BadInput(f"MNIST in {data_dir}: labels outside 0-9")
    if limit:
        images, labels = images[:limit], labels[:limit]
    if len(images) == 0:
        raise BadInput(f"MNIST in {data_dir}: the {'train' if train else 'test'} split is empty")
    return images, labels


def to_tensors(images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    """Normalize once, exactly as ToTensor() + Normalize() would per sample, on the device."""
    x = images.to(device).unsqueeze(1).float().div_(255.0).sub_(MEAN).div_(STD)
    x = x.contiguous(memory_format=torch.channels_last)
    return x, labels.to(device)
