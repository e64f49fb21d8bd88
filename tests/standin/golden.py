"""The golden AMI's Docker data: the training image pulled once, copied into each new instance.

    python tests/standin/golden.py name [REF ...]    # the seed volume `standin.py up` would use
    python tests/standin/golden.py prune [REF ...]   # drop every other seed volume (older inputs)

REF: the <repository>:<tag> references of the training image (default: what `standin.py up` pushes).

A team that launches many short runs bakes its own AMI from the Deep Learning Base AMI with the
training image already pulled; a fresh instance of it starts training without the 6 GB pull. The
stand-in's version (emulator.GOLDEN_AMI_ID) boots the `dlami` instance image (Docker and the
roles' packages installed) with its /var/lib/docker volume filled from a seed (fill()): a Docker data folder that an instance's
own Docker filled by pulling the training image from the stand-in's registry under its ECR name,
so the train role finds the image exactly as it would after its own pull.

The seed is a Docker volume `ct-standin-seed-<hash of its inputs>` (the dlami image and the
training image's id and references), built when missing like the images: the data folder is
its docker/ subfolder and a `complete` file beside it marks a finished build.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCKER = os.environ.get("DOCKER", "docker")
PREFIX = "ct-standin-seed-"
# Bump when build() changes what the seed holds (the name hashes this, not the code).
SEED_RECIPE = "docker-pull-v1"
# What a nested Docker daemon needs instead of --privileged (as the instance containers, instances.py).
NESTED_DOCKER_ARGS = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                      "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                      "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm"]


def _log(msg: str) -> None:
    print(f"[golden] {msg}", file=sys.stderr, flush=True)


def docker(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], check=check, text=True, capture_output=True, **kwargs)


def seed_name(dlami_image: str, training_image: str, refs: list[str]) -> str:
    """The seed volume for these inputs: the training image by its id, so a rebuilt one reseeds."""
    image_id = docker("image", "inspect", "--format", "{{.Id}}", training_image).stdout.strip()
    key = json.dumps([SEED_RECIPE, dlami_image, image_id, sorted(refs)])
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]


def mountpoint(volume: str) -> Path:
    return Path(docker("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())


def complete(volume: str) -> bool:
    found = docker("volume", "inspect", "--format", "{{.Mountpoint}}", volume, check=False)
    return found.returncode == 0 and (Path(found.stdout.strip()) / "complete").is_file()


def build(volume: str, dlami_image: str, images: list[str], registry: dict, certs_d: Path) -> None:
    """Pull `images` (full ECR names) with the dlami image's Docker into the seed volume.

    registry: host, ip, user, password of the stand-in's ECR registry. The login lives in the
    build container's home, never in the seed.
    """
    if complete(volume):
        return
    started = time.monotonic()
    _log(f"building {volume}: pulling {', '.join(images)}")
    name = f"{volume}-build"
    docker("rm", "-f", name, check=False)
    docker("volume", "rm", "-f", volume, check=False)  # an unfinished build's leftovers
    docker("run", "-d", "--name", name, "--network", "host", *NESTED_DOCKER_ARGS,
           "-v", f"{volume}:/seed", "-v", f"{certs_d}:/etc/docker/certs.d:ro",
           "--add-host", f"{registry['host']}:{registry['ip']}",
           "--entrypoint", "dockerd", dlami_image, "--data-root", "/seed/docker")
    try:
        for _attempt in range(60):
            if docker("exec", name, "docker", "info", check=False).returncode == 0:
                break
            time.sleep(0.5)
        docker("exec", "-i", name, "docker", "login", registry["host"], "--username", registry["user"],
               "--password-stdin", input=registry["password"])
        for image in images:
            docker("exec", name, "docker", "pull", "-q", image)
        docker("exec", name, "docker", "logout", registry["host"], check=False)
        docker("stop", name)  # dockerd shuts down cleanly: its data folder is consistent
        docker("run", "--rm", "-v", f"{volume}:/seed", "--entrypoint", "touch", dlami_image, "/seed/complete")
    finally:
        docker("rm", "-f", name, check=False)
    _log(f"built {volume} in {time.monotonic() - started:.0f}s")


def fill(target_volume: str, seed: str) -> float:
    """Create `target_volume` holding the seed's Docker data folder as the instance's own; returns seconds.

    What an AMI's snapshot gives each instance's root volume, without copying 6 GB per instance:
    the image layers' contents (overlay2/<layer>/diff) are hard links, every other file (Docker's
    databases and metadata, which the daemon rewrites) a real copy. A layer's files are only ever
    read (overlayfs copies a file up into the container's own layer before changing it) or
    unlinked with their image, so neither the seed nor another instance sees what one does.
    Needs the volumes on one filesystem, as Docker's local volumes are.
    """
    started = time.monotonic()
    docker("volume", "rm", "-f", target_volume, check=False)  # what a failed earlier attempt left
    docker("volume", "create", target_volume)
    source, target = mountpoint(seed) / "docker", mountpoint(target_volume)
    shutil.copystat(source, target)
    for entry in source.iterdir():
        if entry.name != "overlay2":
            subprocess.run(["cp", "-a", str(entry), str(target)], check=True)
            continue
        (target / "overlay2").mkdir(exist_ok=True)
        shutil.copystat(entry, target / "overlay2")
        for layer in entry.iterdir():
            if not layer.is_dir() or layer.is_symlink() or not (layer / "diff").is_dir():
                subprocess.run(["cp", "-a", str(layer), str(target / "overlay2")], check=True)
                continue
            (target / "overlay2" / layer.name).mkdir()
            shutil.copystat(layer, target / "overlay2" / layer.name)
            for part in layer.iterdir():
                link = ["-l"] if part.name == "diff" else []
                subprocess.run(["cp", "-a", *link, str(part), str(target / "overlay2" / layer.name)], check=True)
    return time.monotonic() - started


def prune(keep: set[str]) -> list[str]:
    """Remove seed volumes other than `keep` (older inputs); a volume still mounted stays."""
    listed = docker("volume", "ls", "-q", "--filter", f"name={PREFIX}").stdout.split()
    removed = []
    for volume in listed:
        if volume.startswith(PREFIX) and volume not in keep:
            if docker("volume", "rm", volume, check=False).returncode == 0:
                removed.append(volume)
    return removed


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("name", "prune"):
        print(__doc__, file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    # pylint: disable-next=import-outside-toplevel
    import images
    import standin

    tags = images.tags()
    current = seed_name(tags["dlami"], tags["training"], argv[1:] or standin.default_training_refs())
    if argv[0] == "name":
        print(current)
    else:
        for volume in prune({current}):
            print(f"removed {volume}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
