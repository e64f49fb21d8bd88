"""make_mnist_split.py: layout, counts, checksums, idempotence, and that torchvision reads it."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import struct

import make_mnist_split
import pytest
import torch
from torchvision import datasets

RAW_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]


def idx_count(path):
    return struct.unpack(">I", path.read_bytes()[4:8])[0]


def test_layout_and_counts(mnist_split):
    root, result = mnist_split
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(RAW_NAMES + [n + ".gz" for n in RAW_NAMES])
    assert (result["train"], result["test"]) == (8000, 2000)
    assert idx_count(raw / "train-images-idx3-ubyte") == idx_count(raw / "train-labels-idx1-ubyte") == 8000
    assert idx_count(raw / "t10k-images-idx3-ubyte") == idx_count(raw / "t10k-labels-idx1-ubyte") == 2000
    for name in RAW_NAMES:
        assert gzip.decompress((raw / f"{name}.gz").read_bytes()) == (raw / name).read_bytes()


def test_split_is_the_source_in_order(mnist_split):
    root = mnist_split[0]
    source = gzip.decompress((make_mnist_split.DEFAULT_SOURCE / "t10k-images-idx3-ubyte.gz").read_bytes())
    raw = root / "MNIST" / "raw"
    joined = (raw / "train-images-idx3-ubyte").read_bytes()[16:] + (raw / "t10k-images-idx3-ubyte").read_bytes()[16:]
    assert joined == source[16:]


def test_source_md5s_match_the_readme():
    expected = make_mnist_split.expected_md5s(make_mnist_split.DEFAULT_SOURCE)
    assert expected == make_mnist_split.TORCHVISION_MD5  # the README and torchvision agree
    for name, md5 in expected.items():
        digest = hashlib.md5((make_mnist_split.DEFAULT_SOURCE / name).read_bytes()).hexdigest()  # noqa: S324
        assert digest == md5


def test_torchvision_reads_both_splits(mnist_split):
    root = mnist_split[0]
    train = datasets.MNIST(str(root), train=True, download=False)
    test = datasets.MNIST(str(root), train=False, download=False)
    assert tuple(train.data.shape) == (8000, 28, 28) and tuple(test.data.shape) == (2000, 28, 28)
    assert train.targets.dtype == torch.int64
    assert set(train.targets.unique().tolist()) == set(range(10))


def test_second_run_changes_nothing(mnist_split):
    root = mnist_split[0]
    raw = root / "MNIST" / "raw"
    before = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    again = make_mnist_split.make_split(make_mnist_split.DEFAULT_SOURCE, root, 8000)
    assert again["written"] == []
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == before


def test_damaged_output_is_repaired(tmp_path):
    make_mnist_split.make_split(make_mnist_split.DEFAULT_SOURCE, tmp_path, 9000)
    target = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    target.write_bytes(b"junk")
    again = make_mnist_split.make_split(make_mnist_split.DEFAULT_SOURCE, tmp_path, 9000)
    assert again["written"] == ["t10k-labels-idx1-ubyte"]
    assert idx_count(target) == 1000


def test_corrupt_source_is_refused(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(make_mnist_split.DEFAULT_SOURCE, source)
    (source / "t10k-labels-idx1-ubyte.gz").chmod(0o644)
    (source / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    with pytest.raises(make_mnist_split.SplitError, match="md5"):
        make_mnist_split.make_split(source, tmp_path / "dest", 8000)


@pytest.mark.parametrize("train", ["0", "10000", "-5"])
def test_bad_train_size_exits_2(tmp_path, capsys, train):
    assert make_mnist_split.main(["--dest", str(tmp_path), "--train", train]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --train must be between 1 and 9999")


def test_missing_source_exits_2(tmp_path, capsys):
    assert make_mnist_split.main(["--source", str(tmp_path / "none"), "--dest", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
