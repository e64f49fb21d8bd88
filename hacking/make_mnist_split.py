"""Make a real-data MNIST train/test split from the 10,000-image MNIST test set (all there is offline).

The first --train images become the train split, the rest the test split, written to DEST/MNIST/raw/
in torchvision's layout, each file uncompressed (what torchvision reads) and as .gz. The source's
md5s are checked. A file already right is not rewritten: a second run changes nothing.
Standard library only. Exit codes: 0 done, 2 bad input (one line "error: ..." on stderr).
"""
import argparse
import gzip
import hashlib
import os
import re
import struct
import sys
import tempfile
from pathlib import Path

SOURCE_IMAGES, SOURCE_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
# torchvision.datasets.MNIST.resources lists these; the source README's table, when there, wins.
TORCHVISION_MD5 = {SOURCE_IMAGES: "9fb629c4189551a2d022fa330f9573f3", SOURCE_LABELS: "ec29112dd5afa0611ce80d1b7f02629c"}
DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


class SplitError(Exception):
    """Bad input: reported as one line, exit code 2."""


def expected_md5s(source: Path) -> dict:
    md5s = dict(TORCHVISION_MD5)
    readme = source / "README.md"
    for line in readme.read_text(encoding="utf-8", errors="replace").splitlines() if readme.is_file() else []:
        match = re.match(r"\|\s*(\S+\.gz)\s*\|.*\|\s*([0-9a-f]{32})\s*\|", line)
        if match and match.group(1) in md5s:
            md5s[match.group(1)] = match.group(2)
    return md5s


def read_idx(source: Path, name: str, md5: str):
    """(header fields, items as a list of bytes) of a checked, gzipped IDX source file."""
    path = source / name
    if not path.is_file():
        raise SplitError(f"source file {path} not found (expected the MNIST test set '{name}')")
    raw = path.read_bytes()
    digest = hashlib.md5(raw).hexdigest()  # noqa: S324 (a checksum, not security)
    if digest != md5:
        raise SplitError(f"{path}: md5 {digest} does not match the expected {md5}")
    try:
        content = gzip.decompress(raw)
        magic, count = struct.unpack(">II", content[:8])
        dims = struct.unpack(f">{magic & 0xFF}I", content[4:4 + 4 * (magic & 0xFF)])
    except (OSError, EOFError, struct.error) as exc:
        raise SplitError(f"{path}: not a gzipped IDX file ({exc})") from None
    header, item = 4 + 4 * len(dims), len(content[4 + 4 * len(dims):]) // max(count, 1)
    if item * count != len(content) - header:
        raise SplitError(f"{path}: truncated or oversized for dims {dims}")
    return (magic, dims[1:]), [content[header + i * item: header + (i + 1) * item] for i in range(count)]


def write_if_changed(path: Path, content: bytes) -> bool:
    """Write content atomically unless the file already holds exactly it; True when written."""
    if path.is_file() and path.read_bytes() == content:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; containers may read as another user
    os.replace(tmp, path)
    return True


def make_split(source: Path, dest: Path, train: int) -> dict:
    """Write the split under dest/MNIST/raw; {'train': n, 'test': m, 'raw': folder, 'written': [names]}."""
    md5s = expected_md5s(source)
    (image_magic, image_dims), images = read_idx(source, SOURCE_IMAGES, md5s[SOURCE_IMAGES])
    (label_magic, _dims), labels = read_idx(source, SOURCE_LABELS, md5s[SOURCE_LABELS])
    if len(images) != len(labels):
        raise SplitError("source images and labels have different counts")
    if not 0 < train < len(images):
        raise SplitError(f"--train must be between 1 and {len(images) - 1}, got {train}")
    raw = dest / "MNIST" / "raw"
    written = []
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for split, part in (("train", slice(0, train)), ("t10k", slice(train, None))):
            for kind, magic, dims, items in (("images-idx3", image_magic, image_dims, images),
                                             ("labels-idx1", label_magic, (), labels)):
                name, chosen = f"{split}-{kind}-ubyte", items[part]
                content = struct.pack(f">II{len(dims)}I", magic, len(chosen), *dims) + b"".join(chosen)
                written += [name] if write_if_changed(raw / name, content) else []
                gz = raw / f"{name}.gz"  # compared decompressed: gzip bytes differ between zlib builds
                try:
                    same = gz.is_file() and gzip.decompress(gz.read_bytes()) == content
                except (OSError, EOFError):
                    same = False
                if not same:
                    write_if_changed(gz, gzip.compress(content, mtime=0))
                    written.append(gz.name)
    except OSError as exc:
        raise SplitError(f"cannot write into {raw}: {exc.strerror or exc}") from None
    return {"train": train, "test": len(images) - train, "raw": str(raw), "written": written}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"default: {DEFAULT_SOURCE}")
    parser.add_argument("--dest", type=Path, required=True, help="dataset root (the trainer's --data-dir)")
    parser.add_argument("--train", type=int, default=8000, help="images in the train split (default: 8000)")
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
