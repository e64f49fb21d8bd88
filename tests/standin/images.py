"""Builds the stand-in's images from Debian, without Docker Hub, cached by content.

    python tests/standin/images.py build [base|training|instance|dlami ...]   # prints name=image
    python tests/standin/images.py tags                                  # what `build` would use
    python tests/standin/images.py prune                                 # drop outdated builds

* base:     `debootstrap --variant=minbase bookworm` + the host's apt configuration (the mirror
            that works on this machine), no docs, no recommends; `docker import`ed.
* training: base + a venv with torch/torchvision from this machine's wheels, pip and git (the
            DLC stand-in; recipe images/training.sh, run in a container and committed).
* instance: base + systemd, sshd, python3 with a current boto3, sudo, the `ec2-user` login user and
            a cloud-init stand-in (images/instance/): the EC2 stand-in. Its build context is
            images/instance/ plus the boto3 wheels, downloaded by the host's pip.
* dlami:    instance + Docker (docker.io), as the Deep Learning Base AMI ships it: the image of the
            golden AMI's instances (recipe images/dlami.Dockerfile; golden.py seeds its Docker).

Each tag is a hash of everything that goes into the image (recipe files, the host apt files
copied in, the parent's tag), so an image is rebuilt only when its inputs change and a warm
machine finds all three with one `docker image inspect` each.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "images"
SUITE = "bookworm"
REPO = "ct-standin"  # image names: ct-standin-base, ct-standin-training, ct-standin-instance
# Bump when _build_base changes what it produces (the base tag hashes this, not the code).
BASE_RECIPE = "debootstrap-minbase-v1"
DOCKER = os.environ.get("DOCKER", "docker")
# The framework of the training image: what `pip install` takes from this machine's disk.
TORCH_VERSION = "2.14.1"
TORCHVISION_VERSION = "0.29.1"
# The host's pip set-up (local wheel folders and indexes, certificates) that the training
# image's install uses, mounted read-only into the build container.
PIP_MOUNTS = [Path("/opt/wheels"), Path("/opt/pypi"), Path("/opt/pypi-more")]
PIP_ENV_KEYS = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_DEFAULT_TIMEOUT")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Host apt files that make the package mirror work on this machine; copied into every image.
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
APT_EXTRA = [Path("/etc/apt/sources.list"), Path("/etc/apt/apt.conf.d/99artifact-registry")]


def _host_apt_files() -> dict[str, bytes]:
    """Active apt source files and the mirror settings, keyed by their path in the image."""
    files: dict[str, bytes] = {}
    if APT_SOURCES_DIR.is_dir():
        for path in sorted(APT_SOURCES_DIR.iterdir()):
            # Only live sources: `*.disabled-*` and other suffixes are not read by apt either.
            if path.suffix in (".list", ".sources") and path.is_file():
                files[str(path)] = path.read_bytes()
    for path in APT_EXTRA:
        if path.is_file():
            files[str(path)] = path.read_bytes()
    return files


def _mirror(apt_files: dict[str, bytes]) -> str:
    """The Debian mirror the host uses (debootstrap needs one before the copied files apply)."""
    for text in (data.decode(errors="replace") for data in apt_files.values()):
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+" + SUITE, text, re.M
        )
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def tags() -> dict[str, str]:
    """name -> full image reference, derived only from the build inputs."""
    apt = _host_apt_files()
    base_inputs = [SUITE.encode(), (RECIPES / "nodoc.dpkg.cfg").read_bytes(),
                   (RECIPES / "norecommends.apt.conf").read_bytes(), BASE_RECIPE.encode()]
    base_inputs += [k.encode() + b"\0" + v for k, v in sorted(apt.items())]
    base = f"{REPO}-base:{_digest(*base_inputs)}"
    out = {"base": base}
    recipe = (RECIPES / "instance.Dockerfile").read_bytes()
    out["instance"] = f"{REPO}-instance:{_digest(base.encode(), recipe, *_context_inputs('instance'))}"
    out["dlami"] = f"{REPO}-dlami:{_digest(out['instance'].encode(), (RECIPES / 'dlami.Dockerfile').read_bytes())}"
    training = [base.encode(), (RECIPES / "training.sh").read_bytes(),
                TORCH_VERSION.encode(), TORCHVISION_VERSION.encode()]
    out["training"] = f"{REPO}-training:{_digest(*training)}"
    return out


def _context_files(name: str) -> list[Path]:
    """The files of an image's build context (images/<name>/), if it has one."""
    folder = RECIPES / name
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _context_inputs(name: str) -> list[bytes]:
    return [str(p.relative_to(RECIPES)).encode() + b"\0" + p.read_bytes() for p in _context_files(name)]


def exists(image: str) -> bool:
    return subprocess.run([DOCKER, "image", "inspect", image], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode == 0


def _log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def _prune(root: Path) -> None:
    """Drop what debootstrap unpacked before the no-docs rules existed, and download leftovers."""
    for path in (root / "usr/share/doc").rglob("*"):
        if (path.is_file() or path.is_symlink()) and path.name != "copyright":
            path.unlink()
    for folder in ("usr/share/man", "usr/share/info", "usr/share/locale"):
        for path in (root / folder).glob("*"):
            if path.name == "locale.alias":
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"):
        for path in root.glob(pattern):
            path.unlink()


def _build_base(image: str) -> None:
    apt = _host_apt_files()
    with tempfile.TemporaryDirectory(prefix="ct-standin-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", "--components=main", SUITE, str(root), _mirror(apt)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        # Replace debootstrap's sources with the host's, so apt inside uses the same mirror.
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        for path, data in apt.items():
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        shutil.copy(RECIPES / "nodoc.dpkg.cfg", root / "etc/dpkg/dpkg.cfg.d/01-nodoc")
        shutil.copy(RECIPES / "norecommends.apt.conf", root / "etc/apt/apt.conf.d/01-norecommends")
        _prune(root)
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([DOCKER, "import", "--change", 'CMD ["/bin/bash"]', "-", image],
                       stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap rootfs failed")


def _build_derived(name: str, image: str, base: str) -> None:
    dockerfile = (RECIPES / f"{name}.Dockerfile").read_text().replace("{base}", base)
    if not _context_files(name):
        # The host daemon has no bridge: builds use the host network (the apt mirror only).
        subprocess.run([DOCKER, "build", "--network", "host", "-q", "-t", image, "-"],
                       input=dockerfile.encode(), check=True, stdout=subprocess.DEVNULL)
        return
    with tempfile.TemporaryDirectory(prefix=f"ct-standin-{name}-") as tmp:
        context = Path(tmp)
        shutil.copytree(RECIPES / name, context / name)
        requirements = context / name / "requirements.txt"
        if requirements.exists():
            # Wheels fetched by the host's pip (its index and certificates), installed offline inside.
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                            "--python-version", "3.11", "-d", str(context / name / "wheels"),
                            "-r", str(requirements)], check=True)
        (context / "Dockerfile").write_text(dockerfile)
        subprocess.run([DOCKER, "build", "--network", "host", "-q", "-t", image, str(context)],
                       check=True, stdout=subprocess.DEVNULL)


def _pip_settings() -> tuple[list[str], dict[str, str]]:
    """Mounts and environment that give the build container the host's pip sources."""
    mounts = [f"{path}:{path}:ro" for path in PIP_MOUNTS if path.is_dir()]
    env = {key: os.environ[key] for key in PIP_ENV_KEYS if os.environ.get(key)}
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                            text=True, check=False).stdout
    for line in config.splitlines():
        key, _sep, value = line.partition("=")
        option = key.rpartition(".")[2].replace("-", "_").upper()
        if key.startswith("global.") and option in ("FIND_LINKS", "EXTRA_INDEX_URL", "INDEX_URL"):
            env.setdefault(f"PIP_{option}", value.strip().strip("'\""))
    if HOST_CA_BUNDLE.is_file():
        mounts.append(f"{HOST_CA_BUNDLE}:/etc/cloudtrain-host-ca.crt:ro")
        env["PIP_CERT"] = "/etc/cloudtrain-host-ca.crt"
    return mounts, env


def _build_training(image: str, base: str) -> None:
    """Run images/training.sh in a container of the base image, then commit it as the image.

    A container rather than `docker build`: the wheels are mounted, not copied into a layer.
    """
    mounts, env = _pip_settings()
    env.update(TORCH_VERSION=TORCH_VERSION, TORCHVISION_VERSION=TORCHVISION_VERSION)
    name = f"{REPO}-training-build-{os.getpid()}"
    args = [DOCKER, "run", "--name", name, "--network", "host",
            "-v", f"{RECIPES / 'training.sh'}:/tmp/training.sh:ro"]
    for mount in mounts:
        args += ["-v", mount]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    try:
        subprocess.run(args + [base, "/bin/sh", "/tmp/training.sh"], check=True, stdout=subprocess.DEVNULL)
        changes = ["ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "ENV PYTHONUNBUFFERED=1", "ENV MPLBACKEND=Agg", "WORKDIR /workspace",
                   f"LABEL org.pytorch.version={TORCH_VERSION} org.pytorch.vision.version={TORCHVISION_VERSION}",
                   'CMD ["python"]']
        commit = [DOCKER, "commit"]
        for change in changes:
            commit += ["--change", change]
        subprocess.run(commit + [name, image], check=True, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


# The image each one is built from (base: debootstrap).
PARENT = {"training": "base", "instance": "base", "dlami": "instance"}


def build(names: list[str] | None = None) -> dict[str, str]:
    """Make sure the images exist; build only the missing ones. Returns name -> image."""
    wanted = tags()
    names = names or ["training", "instance"]
    order = ["base"]
    for name in names:
        chain = []
        while name not in order and name not in chain:
            chain.insert(0, name)
            name = PARENT.get(name, "base")
        order += [n for n in chain if n not in order]
    for name in order:
        image = wanted[name]
        if exists(image):
            continue
        children = [n for n in order if PARENT.get(n) == name]
        if name not in names and children and all(exists(wanted[n]) for n in children):
            continue  # only a parent, and every image built from it exists already
        started = time.monotonic()
        _log(f"building {image}")
        if name == "base":
            _build_base(image)
        elif name == "training":
            _build_training(image, wanted["base"])
        else:
            _build_derived(name, image, wanted[PARENT[name]])
        _log(f"built {image} in {time.monotonic() - started:.0f}s")
    return {n: wanted[n] for n in names}


def prune() -> list[str]:
    """Remove stand-in images whose tag no longer matches their inputs (old builds)."""
    current = set(tags().values())
    listed = subprocess.run([DOCKER, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                            check=True, capture_output=True, text=True).stdout.split()
    stale = [ref for ref in listed if ref.startswith(f"{REPO}-") and ref not in current]
    removed = []
    for ref in stale:
        # Fails (and is left alone) while a container still uses it.
        if subprocess.run([DOCKER, "image", "rm", ref], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode == 0:
            removed.append(ref)
    return removed


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("build", "tags", "prune"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "prune":
        for ref in prune():
            print(f"removed {ref}")
        return 0
    result = tags() if argv[0] == "tags" else build(argv[1:] or None)
    for name, image in result.items():
        print(f"{name}={image}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
