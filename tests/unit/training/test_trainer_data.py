"""mnist_trainer.data: IDX checks, loading through torchvision, normalization done once."""
from __future__ import annotations

import shutil

import pytest
import torch
from torchvision import datasets, transforms

from mnist_trainer import data
from mnist_trainer.errors import BadInput


@pytest.fixture
def raw_copy(mnist_split, tmp_path):
    root = mnist_split[0]
    shutil.copytree(root, tmp_path / "root")
    return tmp_path / "root", tmp_path / "root" / "MNIST" / "raw"


def test_check_idx_counts(mnist_split):
    root = mnist_split[0]
    raw = root / "MNIST" / "raw"
    assert data.check_idx(raw / "train-images-idx3-ubyte", 3) == 8000
    assert data.check_idx(raw / "t10k-labels-idx1-ubyte", 1) == 2000


def test_wrong_magic(raw_copy):
    root, raw = raw_copy
    path = raw / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])
    with pytest.raises(BadInput, match="magic 0x00000803, items \\[\\]; expected 0x00000801"):
        data.check_raw_files(root, download=False)


@pytest.mark.parametrize("cut", [1, 784, 5000])
def test_truncated(raw_copy, cut):
    root, raw = raw_copy
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(BadInput, match="truncated"):
        data.check_raw_files(root, download=False)


def test_shorter_than_header(raw_copy):
    root, raw = raw_copy
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(BadInput, match="shorter than an IDX header"):
        data.check_raw_files(root, download=False)


def test_missing_without_download(tmp_path):
    with pytest.raises(BadInput, match="MNIST data not found"):
        data.check_raw_files(tmp_path, download=False)


def test_load_split_and_limit(mnist_split):
    root = mnist_split[0]
    images, labels = data.load_split(root, train=True, download=False)
    assert images.dtype == torch.uint8 and tuple(images.shape) == (8000, 28, 28)
    few_images, few_labels = data.load_split(root, train=True, download=False, limit=100)
    assert torch.equal(few_images, images[:100]) and torch.equal(few_labels, labels[:100])


def test_normalized_once_equals_the_examples_transform(mnist_split):
    root = mnist_split[0]
    images, labels = data.load_split(root, train=False, download=False)
    x, y = data.to_tensors(images, labels, torch.device("cpu"))
    reference = datasets.MNIST(str(root), train=False, download=False, transform=transforms.Compose([
        transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))
    for index in (0, 1, 999, 1999):
        sample, target = reference[index]
        assert torch.allclose(x[index], sample, atol=1e-6)
        assert int(y[index]) == target
    assert x.is_contiguous(memory_format=torch.channels_last)
