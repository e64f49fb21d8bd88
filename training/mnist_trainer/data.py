"""MNIST decoded once into normalized tensors that stay on the device: a batch is then a slice.

The example runs ToTensor() + Normalize() on every sample of every epoch through a DataLoader; the
same arithmetic done once on the whole uint8 tensor gives the same values.
"""
import struct
import zlib
from pathlib import Path

import torch
from torchvision import datasets

from .errors import BadInput

MEAN, STD = 0.1307, 0.3081  # the example's Normalize((0.1307,), (0.3081,))
RAW_FILES = {"train-images-idx3-ubyte": 3, "train-labels-idx1-ubyte": 1, "t10k-images-idx3-ubyte": 3,
             "t10k-labels-idx1-ubyte": 1}  # what torchvision reads, and the dimensions of each


def check_idx(path: Path, ndim: int) -> int:
    """Check an IDX file's header against its size (torchvision would crash or assert); its item count."""
    with open(path, "rb") as handle:
        header, size = handle.read(4 + 4 * ndim), path.stat().st_size
    if len(header) < 4 + 4 * ndim:
        raise BadInput(f"corrupt MNIST file {path}: only {size} bytes, shorter than an IDX header")
    magic, count, *item = struct.unpack(f">{1 + ndim}I", header)
    if magic != 0x800 + ndim or item != [28, 28][:ndim - 1]:
        raise BadInput(f"corrupt MNIST file {path}: IDX magic {magic:#010x}, items {item}; expected "
                       f"{0x800 + ndim:#010x}, {[28, 28][:ndim - 1]}")
    expected = len(header) + count * (784 if ndim == 3 else 1)
    if size != expected:
        raise BadInput(f"corrupt MNIST file {path}: {'truncated' if size < expected else 'has trailing bytes'} "
                       f"({size} bytes, the header says {expected})")
    return count


def check_raw_files(data_dir, download: bool) -> None:
    raw = Path(data_dir) / "MNIST" / "raw"
    missing = [name for name in RAW_FILES if not (raw / name).is_file()]
    if missing and not download:
        raise BadInput(f"MNIST data not found in {raw} (missing {', '.join(missing)}); make a split with "
                       f"hacking/make_mnist_split.py --dest {data_dir}, or drop --no-download")
    for name in set(RAW_FILES) - set(missing):
        check_idx(raw / name, RAW_FILES[name])


def load_split(data_dir, train: bool, download: bool, limit: int = 0):
    """(images uint8 [N, 28, 28], labels int64 [N]) of one split, read by torchvision."""
    try:
        dataset = datasets.MNIST(str(data_dir), train=train, download=download)
    except (RuntimeError, OSError, ValueError, AssertionError) as exc:  # not found, a failed download
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise BadInput(f"cannot load MNIST from {data_dir}: {message}") from None
    images, labels = dataset.data[:limit or None], dataset.targets[:limit or None].long()
    if len(images) == 0 or len(images) != len(labels) or int(labels.min()) < 0 or int(labels.max()) > 9:
        raise BadInput(f"MNIST in {data_dir}: the {'train' if train else 'test'} split has {len(images)} images "
                       f"and {len(labels)} labels, which must be 0-9")
    return images, labels


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """Names the training data in a checkpoint, so that resuming on other data is refused."""
    return f"{len(labels)} images, crc32 {zlib.crc32(labels.numpy(), zlib.crc32(images.numpy())):08x}"


def to_tensors(images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    """Normalized once on the device, as ToTensor() + Normalize() would per sample; channels_last."""
    x = images.to(device).unsqueeze(1).float().div_(255.0).sub_(MEAN).div_(STD)
    return x.contiguous(memory_format=torch.channels_last), labels.to(device)
