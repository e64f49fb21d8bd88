"""The whole local stand-in for AWS, started, reused or stopped with one command.

    python tests/standin/standin.py up     [--only emulator,registry,instance] [--fresh]
                                           [--instance-name NAME] [--training-tag TAG ...]
    python tests/standin/standin.py down   [--only registry,instance,emulator] [--instance-name NAME]
    python tests/standin/standin.py status [--instance-name NAME]
    python tests/standin/standin.py vars   [--instance-name NAME] [--training-tag TAG ...]

`up` brings up, reusing whatever already runs:
  * the AWS emulator (moto on 127.0.0.1:5055, tests/standin/emulator.py);
  * the Deep Learning Containers registry (tests/standin/registry.py: docker-registry with TLS
    and htpasswd on 127.0.0.1:443, named 763104351884.dkr.ecr.us-east-1.amazonaws.com, user
    AWS with the password the emulator's ECR hands out) holding the locally built training image
    under the repository:tag that the collection's image resolver picks by default for a CPU
    instance (for example `pytorch:2.13.0-cpu-amzn2023`), plus any --training-tag;
  * the instance: a systemd container (`ct-standin-instance`) on the host network that plays
    the EC2 instance; Ansible reaches it with the community.docker.docker connection.
Images are built once and cached by content (tests/standin/images.py). `--fresh` recreates the
instance container (a clean "new instance", no Docker installed). `vars` prints, and `up` writes
to .cache/standin/vars.yml, the variables a play needs to use the stand-in. `down` removes the
container and stops the registry; cached images and pushed images stay. The emulator is shared
by everyone on the machine: `down` stops it only when --only names it.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import emulator  # noqa: E402
import images  # noqa: E402
import registry  # noqa: E402

REPO = HERE.parents[1]
STATE = Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", REPO / ".cache" / "standin"))
DOCKER = os.environ.get("DOCKER", "docker")

# The DLC registry as the emulator describes it: ECR's proxy endpoint for account 763104351884
# and the credentials moto's GetAuthorizationToken returns for that registry id.
DLC_ACCOUNT = "763104351884"
REGION = "us-east-1"
REGISTRY_NAME = "dlc"
REGISTRY_HOST = f"{DLC_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
# Another loopback address (CLOUDTRAIN_STANDIN_REGISTRY_IP=127.0.0.2) lets a second stand-in run
# beside the first one (its own state dir and emulator port too); the port stays 443 because
# the ECR name is pulled over plain https://<name>/.
REGISTRY_IP = os.environ.get("CLOUDTRAIN_STANDIN_REGISTRY_IP", "127.0.0.1")
REGISTRY_LISTEN = f"{REGISTRY_IP}:443"
REGISTRY_USER = "AWS"
REGISTRY_PASSWORD = f"{DLC_ACCOUNT}-auth-token"
# The instance type of the demo and the tests: the image is pushed where the resolver looks for it.
DEFAULT_INSTANCE_TYPE = "m7i.large"


def default_training_refs() -> list[str]:
    """<repository>:<tag> of the image the train role resolves by default for DEFAULT_INSTANCE_TYPE."""
    sys.path.insert(0, str(REPO / ".collections"))
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.cloudtrain.ec2.plugins.module_utils._dlc_images import resolve

    uri = resolve(instance_type=DEFAULT_INSTANCE_TYPE, region=REGION, registry="private")["uri"]
    return [uri.split("/", 1)[1]]


INSTANCE_NAME = os.environ.get("CLOUDTRAIN_STANDIN_INSTANCE", "ct-standin-instance")
INSTANCE_USER = "ec2-user"
# The nested daemon shares the host's network namespace: no bridge, no iptables, no forwarding.
# A bridge there would fight the host daemon (started with --bridge=none, which deletes docker0).
NESTED_DAEMON_OPTIONS = {"bridge": "none", "iptables": False, "ip-masq": False, "ip-forward": False}
# What an instance profile gives a process on EC2, pointed at the emulator.
INSTANCE_ENV = {
    "AWS_ACCESS_KEY_ID": emulator.CLIENT_ENV["AWS_ACCESS_KEY_ID"],
    "AWS_SECRET_ACCESS_KEY": emulator.CLIENT_ENV["AWS_SECRET_ACCESS_KEY"],
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ENDPOINT_URL": emulator.URL,
    "AWS_EC2_METADATA_DISABLED": "true",
}
LABEL = "cloudtrain.standin"
COMPONENTS = ("emulator", "registry", "instance")


def log(msg: str) -> None:
    print(f"[standin] {msg}", file=sys.stderr, flush=True)


def docker(*args: str, check: bool = True, capture: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], check=check, text=True,
                          capture_output=capture, **kwargs)


# --------------------------------------------------------------------------- registry + image

def _registry_request(path: str, info: dict, method: str = "GET", accept: str = "") -> tuple[int, dict]:
    ctx = ssl.create_default_context(cafile=info["ca_cert"])
    auth = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    req = urllib.request.Request(f"https://{REGISTRY_IP}/v2/{path}", method=method,
                                 headers={"Authorization": f"Basic {auth}", "Accept": accept})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def _pushed_digest(ref: str, info: dict) -> str | None:
    repository, tag = ref.rsplit(":", 1)
    status, headers = _registry_request(
        f"{repository}/manifests/{tag}", info, method="HEAD",
        accept="application/vnd.docker.distribution.manifest.v2+json")
    return headers.get("Docker-Content-Digest") if status == 200 else None


def push_training_image(image: str, refs: list[str], info: dict) -> None:
    """Put the training image into the registry under each <repository>:<tag> (skipped when there).

    The host daemon pushes through <registry ip>:443 (no certificate check on 127.0.0.0/8) with its own throw-away docker config, so the
    user's ~/.docker/config.json never holds the stand-in's credentials.
    """
    repo_digests = json.loads(docker("image", "inspect", "--format", "{{json .RepoDigests}}", image).stdout) or []
    env = dict(os.environ, DOCKER_CONFIG=str(STATE / "docker-config"))
    logged_in = False
    for ref in refs:
        local = f"{REGISTRY_LISTEN}/{ref}"
        digest = _pushed_digest(ref, info)
        if digest and f"{local.rsplit(':', 1)[0]}@{digest}" in repo_digests:
            continue
        if not logged_in:
            docker("login", REGISTRY_LISTEN, "--username", REGISTRY_USER, "--password-stdin",
                   input=REGISTRY_PASSWORD, env=env)
            logged_in = True
        started = time.monotonic()
        docker("tag", image, local)
        docker("push", local, env=env)
        log(f"pushed {ref} in {time.monotonic() - started:.0f}s")


def up_registry(tags: list[str]) -> dict:
    info = registry.start(REGISTRY_NAME, REGISTRY_LISTEN, REGISTRY_USER, REGISTRY_PASSWORD,
                          dns_names=[REGISTRY_HOST], ips=[REGISTRY_IP])
    # The instance trusts the registry's CA through a bind-mounted certs.d folder: copied in
    # place so a running instance sees a renewed CA without being recreated.
    certs = STATE / "instance-certs.d" / REGISTRY_HOST
    certs.mkdir(parents=True, exist_ok=True)
    target = certs / "ca.crt"
    data = Path(info["ca_cert"]).read_bytes()
    if not target.exists() or target.read_bytes() != data:
        with open(target, "wb") as handle:
            handle.write(data)
    image = images.build(["training"])["training"]
    push_training_image(image, tags, info)
    return info


# --------------------------------------------------------------------------- instance

def _inspect(name: str) -> dict | None:
    proc = docker("container", "inspect", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def _wait_for_systemd(name: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        proc = docker("exec", name, "systemctl", "is-system-running", check=False)
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    raise SystemExit(f"systemd in {name} did not come up within {timeout:.0f}s (state: {state!r})")


def up_instance(name: str, fresh: bool) -> None:
    image = images.build(["instance"])["instance"]
    current = _inspect(name)
    if current and not fresh and current["Config"]["Image"] == image and current["State"]["Running"]:
        return
    if current:
        down_instance(name)
    certs_d = STATE / "instance-certs.d"
    certs_d.mkdir(parents=True, exist_ok=True)
    env_args = [a for k, v in INSTANCE_ENV.items() for a in ("-e", f"{k}={v}")]
    # Everything below replaces --privileged, which cannot start on this kind of machine;
    # systemd needs the cgroup tree writable, the nested dockerd needs the capabilities and all
    # devices, and /var/lib/docker must be a real filesystem (overlay2 does not nest on overlay).
    docker(
        "run", "-d", "--name", name, "--hostname", name, "--label", f"{LABEL}=instance",
        "--network", "host", "-e", "container=docker", *env_args,
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
        "-v", f"{name}-docker:/var/lib/docker",
        "-v", f"{certs_d}:/etc/docker/certs.d:ro",
        # ECR's proxy endpoint for the DLC account resolves to the loopback registry.
        "--add-host", f"{REGISTRY_HOST}:{REGISTRY_IP}",
        "--stop-signal", "SIGRTMIN+3",
        image, "/sbin/init",
    )
    # `docker exec` inherits the container's environment (the "instance profile"); sudo keeps
    # it through the image's sudoers env_keep.
    _wait_for_systemd(name)


def down_instance(name: str) -> None:
    if _inspect(name):
        docker("rm", "-f", "-v", name)
    docker("volume", "rm", f"{name}-docker", check=False)


# --------------------------------------------------------------------------- vars

def play_vars(name: str, tags: list[str]) -> dict:
    images_ = [f"{REGISTRY_HOST}/{ref}" for ref in tags]
    return {
        "standin_instance_name": name,
        # Host variables of the instance: the container, over a real Ansible connection.
        "provision_host_vars": {
            "ansible_connection": "community.docker.docker",
            "ansible_host": name,
            "ansible_user": INSTANCE_USER,
        },
        # The nested Docker daemon must not touch the host's network (see NESTED_DAEMON_OPTIONS).
        "docker_daemon_options": dict(NESTED_DAEMON_OPTIONS),
        "standin_registry": REGISTRY_HOST,
        "standin_training_images": images_,
        "standin_training_image": images_[0],
        "standin_aws_endpoint_url": emulator.URL,
        "standin_region": REGION,
    }


def vars_path(name: str) -> Path:
    # Another instance name (a Molecule scenario's own instance) never overwrites the demo's vars.
    return STATE / ("vars.yml" if name == INSTANCE_NAME else f"vars-{name}.yml")


def write_vars(name: str, tags: list[str]) -> Path:
    path = vars_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: readable by include_vars / -e @file without PyYAML here.
    path.write_text("---\n" + json.dumps(play_vars(name, tags), indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- commands

def cmd_up(args) -> None:
    started = time.monotonic()
    only = _only(args)
    if "emulator" in only:
        emulator.start()
    if "registry" in only:
        up_registry(args.training_tag)
    if "instance" in only:
        up_instance(args.instance_name, args.fresh)
    path = write_vars(args.instance_name, args.training_tag)
    log(f"up ({', '.join(c for c in COMPONENTS if c in only)}) in {time.monotonic() - started:.1f}s; vars in {path}")


def _only(args) -> set[str]:
    only = set(args.only.split(",")) if args.only else set(COMPONENTS)
    unknown = only - set(COMPONENTS)
    if unknown:
        raise SystemExit(f"unknown component(s) {sorted(unknown)}; choose from {COMPONENTS}")
    return only


def cmd_down(args) -> None:
    only = _only(args)
    if "instance" in only:
        down_instance(args.instance_name)
    if "registry" in only:
        registry.stop(REGISTRY_NAME)
    # The emulator is shared by everything on the machine: stopped only when asked for by name.
    if args.only and "emulator" in only:
        emulator.stop()
    if "instance" in only:
        vars_path(args.instance_name).unlink(missing_ok=True)


def cmd_status(args) -> int:
    inst = _inspect(args.instance_name)
    status = {
        "emulator": "up" if emulator.is_up() else "down",
        "registry": "up" if registry.status(REGISTRY_NAME) else "down",
        "instance": (inst["State"]["Status"] if inst else "absent"),
    }
    print(json.dumps(status, indent=2))
    return 0 if all(v in ("up", "running") for v in status.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "vars"):
        p = sub.add_parser(name)
        p.add_argument("--instance-name", default=INSTANCE_NAME,
                       help=f"instance container name (default {INSTANCE_NAME}, env CLOUDTRAIN_STANDIN_INSTANCE)")
        if name in ("up", "vars"):
            p.add_argument("--training-tag", action="append",
                           help="<repository>:<tag> to push the training image to (default: what the "
                                "resolver picks for a CPU instance), repeatable")
        if name in ("up", "down"):
            p.add_argument("--only", help=f"comma-separated subset of {','.join(COMPONENTS)} "
                           "(down: default instance and registry; the emulator only when named)")
        if name == "up":
            p.add_argument("--fresh", action="store_true", help="recreate the instance container")
    args = parser.parse_args(argv)
    if getattr(args, "training_tag", None) is None and args.cmd in ("up", "vars"):
        args.training_tag = default_training_refs()
    if args.cmd == "up":
        cmd_up(args)
    elif args.cmd == "down":
        cmd_down(args)
    elif args.cmd == "status":
        return cmd_status(args)
    else:
        print("---\n" + json.dumps(play_vars(args.instance_name, args.training_tag), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
