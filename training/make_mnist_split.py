"""Make a real-data MNIST train/test split from the 10,000-image test set.

Offline there is only the original MNIST test set ("t10k"). This command splits it into a train
part (the first --train images) and a test part (the rest) and writes both in the layout that
torchvision.datasets.MNIST reads from ``<dest>/MNIST/raw/``:

    train-images-idx3-ubyte(.gz)  train-labels-idx1-ubyte(.gz)
    t10k-images-idx3-ubyte(.gz)   t10k-labels-idx1-ubyte(.gz)

Both the compressed and the uncompressed files are written: torchvision checks for the
uncompressed files of *both* splits before it reads either, and some versions look for the .gz.

Idempotent: a file whose bytes are already right is left alone (mtime kept), so a second run
changes nothing. Needs only the standard library (no torch import, it runs in well under a second).

Exit codes: 0 done, 2 bad input (one line ``error: ...`` on stderr).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import struct
import sys
import tempfile
from pathlib import Path

SOURCE_IMAGES = "t10k-images-idx3-ubyte.gz"
SOURCE_LABELS = "t10k-labels-idx1-ubyte.gz"
# torchvision.datasets.MNIST.resources lists these md5s; the source README repeats them and,
# when present, is what we check against (so a README that disagrees is noticed too).
TORCHVISION_MD5 = {
    SOURCE_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    SOURCE_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}
IMAGES_MAGIC = 0x00000803  # IDX: unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # IDX: unsigned byte, 1 dimension
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "mnist"


class SplitError(Exception):
    """Bad input: reported as one line, exit code 2."""


def expected_md5s(source: Path) -> dict:
    """The md5 of each source file, from the source README's table when it has one."""
    md5s = dict(TORCHVISION_MD5)
    readme = source / "README.md"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(r"\|\s*(\S+\.gz)\s*\|.*\|\s*([0-9a-f]{32})\s*\|", line)
            if match and match.group(1) in md5s:
                md5s[match.group(1)] = match.group(2)
    return md5s


def read_source(source: Path, name: str, md5: str) -> bytes:
    path = source / name
    if not path.is_file():
        raise SplitError(f"source file {path} not found (expected the MNIST test set '{name}')")
    raw = path.read_bytes()
    digest = hashlib.md5(raw).hexdigest()  # noqa: S324 (a checksum, not security)
    if digest != md5:
        raise SplitError(f"{path}: md5 {digest} does not match the expected {md5}")
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise SplitError(f"{path}: not a valid gzip file ({exc})") from None


def parse_idx(data: bytes, magic: int, name: str) -> tuple:
    """Return (count, header_length, item_size) of an IDX byte string, checking its header."""
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len or struct.unpack(">I", data[:4])[0] != magic:
        raise SplitError(f"{name}: not an IDX file with magic {magic:#010x}")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    item = 1
    for dim in dims[1:]:
        item *= dim
    if len(data) != header_len + dims[0] * item:
        raise SplitError(f"{name}: truncated or oversized ({len(data)} bytes for dims {dims})")
    return dims, header_len, item


def slice_idx(data: bytes, magic: int, start: int, stop: int, name: str) -> bytes:
    """The IDX file holding items [start, stop) of data, with the header's count fixed."""
    dims, header_len, item = parse_idx(data, magic, name)
    ndim = len(dims)
    header = struct.pack(f">I{ndim}I", magic, stop - start, *dims[1:])
    return header + data[header_len + start * item: header_len + stop * item]


def write_if_changed(path: Path, content: bytes) -> bool:
    """Write content atomically unless the file already holds exactly it. True when written."""
    if path.is_file() and path.stat().st_size == len(content) and path.read_bytes() == content:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; containers may read as another user
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def make_split(source: Path, dest: Path, train: int) -> dict:
    """Write the split under dest/MNIST/raw; return {'train': n, 'test': m, 'written': [names]}."""
    md5s = expected_md5s(source)
    images = read_source(source, SOURCE_IMAGES, md5s[SOURCE_IMAGES])
    labels = read_source(source, SOURCE_LABELS, md5s[SOURCE_LABELS])
    total = parse_idx(images, IMAGES_MAGIC, SOURCE_IMAGES)[0][0]
    if parse_idx(labels, LABELS_MAGIC, SOURCE_LABELS)[0][0] != total:
        raise SplitError("source images and labels have different counts")
    if not 0 < train < total:
        raise SplitError(f"--train must be between 1 and {total - 1}, got {train}")

    raw = dest / "MNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SplitError(f"cannot create {raw}: {exc.strerror or exc}") from None
    files = {
        "train-images-idx3-ubyte": slice_idx(images, IMAGES_MAGIC, 0, train, SOURCE_IMAGES),
        "train-labels-idx1-ubyte": slice_idx(labels, LABELS_MAGIC, 0, train, SOURCE_LABELS),
        "t10k-images-idx3-ubyte": slice_idx(images, IMAGES_MAGIC, train, total, SOURCE_IMAGES),
        "t10k-labels-idx1-ubyte": slice_idx(labels, LABELS_MAGIC, train, total, SOURCE_LABELS),
    }
    written = []
    try:
        for name, content in files.items():
            if write_if_changed(raw / name, content):
                written.append(name)
            gz_path = raw / f"{name}.gz"
            # Compare the decompressed .gz, not its bytes: gzip output may differ between zlib builds.
            try:
                current = gzip.decompress(gz_path.read_bytes()) if gz_path.is_file() else None
            except (OSError, EOFError):
                current = None
            if current != content:
                write_if_changed(gz_path, gzip.compress(content, compresslevel=6, mtime=0))
                written.append(gz_path.name)
    except OSError as exc:
        raise SplitError(f"cannot write into {raw}: {exc.strerror or exc}") from None
    return {"train": train, "test": total - train, "raw": str(raw), "written": written}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Split the real MNIST test set into train/test files in torchvision's raw layout.",
        epilog="exit codes: 0 done (also when nothing needed writing), 2 bad input",
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"folder with {SOURCE_IMAGES} and {SOURCE_LABELS} (default: {DEFAULT_SOURCE})")
    parser.add_argument("--dest", type=Path, required=True,
                        help="dataset root: files go to DEST/MNIST/raw/ (pass it as the trainer's --data-dir)")
    parser.add_argument("--train", type=int, default=8000,
                        help="how many of the first images form the train split; the rest is the test split "
                             "(default: 8000)")
    args = parser.parse_args(argv)
    try:
        result = make_split(args.source, args.dest, args.train)
    except SplitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = f"wrote {', '.join(result['written'])}" if result["written"] else "already up to date"
    print(f"MNIST split in {result['raw']}: {result['train']} train / {result['test']} test images ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
