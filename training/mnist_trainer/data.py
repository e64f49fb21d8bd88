"""MNIST through torchvision, decoded once into normalized tensors that stay on the device.

The example runs ToTensor + Normalize on every sample of every epoch through a DataLoader. The same
arithmetic done once on the whole uint8 tensor gives the same values; a batch is then a slice.
"""
import struct
import zlib
from pathlib import Path

import torch
from torchvision import datasets

from .errors import BadInput

MEAN, STD = 0.1307, 0.3081  # the example's Normalize((0.1307,), (0.3081,))
RAW_FILES = {  # torchvision reads the uncompressed files of both splits: name -> (IDX magic, item shape)
    "train-images-idx3-ubyte": (0x803, (28, 28)), "train-labels-idx1-ubyte": (0x801, ()),
    "t10k-images-idx3-ubyte": (0x803, (28, 28)), "t10k-labels-idx1-ubyte": (0x801, ()),
}


def raw_folder(data_dir) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def check_idx(path: Path, magic: int, item_shape: tuple) -> int:
    """Check an IDX file's header against its size (torchvision would crash or assert); the item count."""
    ndim = 1 + len(item_shape)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise BadInput(f"corrupt MNIST file {path}: only {size} bytes, shorter than an IDX header")
    found, *dims = struct.unpack(f">{1 + ndim}I", header)
    if found != magic:
        raise BadInput(f"corrupt MNIST file {path}: IDX magic {found:#010x}, expected {magic:#010x}")
    if tuple(dims[1:]) != item_shape:
        raise BadInput(f"corrupt MNIST file {path}: item shape {tuple(dims[1:])}, expected {item_shape}")
    expected = len(header) + dims[0] * (28 * 28 if item_shape else 1)
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise BadInput(f"corrupt MNIST file {path}: {what} ({size} bytes, header says {expected})")
    return dims[0]


def check_raw_files(data_dir, download: bool) -> None:
    raw = raw_folder(data_dir)
    missing = [name for name in RAW_FILES if not (raw / name).is_file()]
    if missing and not download:
        raise BadInput(f"MNIST data not found in {raw} (missing {', '.join(missing)}); make a split with "
                       f"hacking/make_mnist_split.py --dest {data_dir}, or drop --no-download")
    for name, (magic, item_shape) in RAW_FILES.items():
        if (raw / name).is_file():
            check_idx(raw / name, magic, item_shape)


def load_split(data_dir, train: bool, download: bool, limit: int = 0):
    """(images uint8 [N, 28, 28], labels int64 [N]) of one split, read by torchvision."""
    try:
        dataset = datasets.MNIST(str(data_dir), train=train, download=download)
    except (RuntimeError, OSError, ValueError, AssertionError) as exc:  # not found, failed download
        raise BadInput(f"cannot load MNIST from {data_dir}: {str(exc).strip() or type(exc).__name__}") from None
    images, labels = dataset.data, dataset.targets.long()
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise BadInput(f"MNIST in {data_dir}: labels outside 0-9")
    if limit:
        images, labels = images[:limit], labels[:limit]
    if len(images) == 0 or len(images) != len(labels):
        raise BadInput(f"MNIST in {data_dir}: {len(images)} images and {len(labels)} labels in the "
                       f"{'train' if train else 'test'} split")
    return images, labels


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """Names the training data in a checkpoint, so that a resume on other data is refused."""
    return f"{len(labels)} images, crc32 {zlib.crc32(labels.numpy().tobytes(), zlib.crc32(images.numpy().tobytes())):08x}"


def to_tensors(images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    """Normalized once on the device, as ToTensor() + Normalize() would per sample; channels_last."""
    x = images.to(device).unsqueeze(1).float().div_(255.0).sub_(MEAN).div_(STD)
    return x.contiguous(memory_format=torch.channels_last), labels.to(device)
