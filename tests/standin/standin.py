"""The whole local stand-in for AWS, started, reused or stopped with one command.

    python tests/standin/standin.py up        [--only emulator,registry,instances] [--training-tag TAG ...]
    python tests/standin/standin.py down      [--only registry,instances,emulator]
    python tests/standin/standin.py status    [--json]
    python tests/standin/standin.py vars      [--training-tag TAG ...]
    eval "$(python tests/standin/standin.py env)"
    python tests/standin/standin.py interrupt INSTANCE_ID [--notice SECONDS]

`up` brings up, reusing whatever already runs:
  * the AWS emulator (moto on 127.0.0.1:5055, tests/standin/emulator.py), holding the public SSM
    parameters of every AMI family the collection reads;
  * the Deep Learning Containers registry (tests/standin/registry.py: docker-registry with TLS
    and htpasswd on 127.0.0.1:443, named 763104351884.dkr.ecr.us-east-1.amazonaws.com, user
    AWS with the password the emulator's ECR hands out) holding the locally built training image
    under the repository:tag that the collection's image resolver picks by default for a CPU
    instance (for example `pytorch:2.13.0-cpu-amzn2023`), plus any --training-tag;
  * the instances: a reconciler (tests/standin/instances.py) that gives every instance the
    emulator runs its own systemd container named after the instance id, with sshd on the
    instance's own loopback address and a metadata service (IMDSv2), and keeps containers and
    emulator in step both ways (stop, start, terminate, a poweroff inside);
  * the golden AMI (emulator.GOLDEN_AMI_ID, tests/standin/golden.py): its instances boot with
    Docker installed and the training image already pulled, from a seed volume that `up` fills
    once by pulling the training image from the registry.
Images and the seed are built once and cached by content (tests/standin/images.py). `vars` prints, and `up`
writes to $CLOUDTRAIN_STANDIN_STATE/vars.yml (default .cache/standin/), the variables a play needs
to reach the instances the provision role launches: `-e @vars.yml`. `down` stops the reconciler
and the instance containers (their disks stay until the emulator forgets the instances) and the
registry; cached images and pushed images stay. The emulator is shared by everyone on the
machine: `down` stops it only when --only names it. `interrupt` posts a spot interruption notice
to the instance's metadata and terminates the instance when the notice runs out, as AWS does.
`status` lists the instances with their emulator state and container state.

The controller reaches the registry as it reaches ECR: `up` maps the registry's name to its address
in /etc/hosts (a tagged line `down` removes) and writes a CA bundle (the system's CAs plus the
stand-in's) that `env` exports as SSL_CERT_FILE, as a company CA would be trusted, with the name
added to NO_PROXY. Then the
controller's preflight (cloudtrain.ec2.image_manifest) asks the registry for the image's manifest.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shlex
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
import golden  # noqa: E402
import images  # noqa: E402
import instances  # noqa: E402
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
# The README's headline type: its GPU tag holds the same image, so that a g4dn.xlarge run gets past the
# controller's image check to the instance, which then says that it has no GPU.
HEADLINE_INSTANCE_TYPE = "g4dn.xlarge"


def default_training_refs() -> list[str]:
    """<repository>:<tag> of the images the train role resolves by default for DEFAULT_INSTANCE_TYPE
    (first) and HEADLINE_INSTANCE_TYPE."""
    sys.path.insert(0, str(REPO / ".collections"))
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.cloudtrain.ec2.plugins.module_utils._dlc_images import resolve

    uris = [resolve(instance_type=t, region=REGION, registry="private")["uri"]
            for t in (DEFAULT_INSTANCE_TYPE, HEADLINE_INSTANCE_TYPE)]
    return list(dict.fromkeys(uri.split("/", 1)[1] for uri in uris))


# The nested Docker daemon shares the host's network namespace: no bridge, no iptables, no
# forwarding. A bridge there would fight the host daemon (started with --bridge=none, which
# deletes docker0).
NESTED_DAEMON_OPTIONS = {"bridge": "none", "iptables": False, "ip-masq": False, "ip-forward": False}
COMPONENTS = ("emulator", "registry", "instances")
# Older names of the components and options, still accepted.
ALIASES = {"instance": "instances"}


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
    certs = instances.CERTS_D / REGISTRY_HOST
    certs.mkdir(parents=True, exist_ok=True)
    target = certs / "ca.crt"
    data = Path(info["ca_cert"]).read_bytes()
    if not target.exists() or target.read_bytes() != data:
        with open(target, "wb") as handle:
            handle.write(data)
    trust_on_controller(data)
    image = images.build(["training"])["training"]
    push_training_image(image, tags, info)
    return info


# The CA files Debian and Red Hat keep; the first one found is the system's trust.
SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
CONTROLLER_CA_BUNDLE = STATE / "controller-ca-bundle.pem"


def trust_on_controller(ca_pem: bytes) -> None:
    """The registry's name resolves here, and a CA bundle for SSL_CERT_FILE trusts its certificate."""
    system = next((Path(f) for f in SYSTEM_CA_FILES if Path(f).exists()), None)
    bundle = (system.read_bytes().rstrip(b"\n") + b"\n" if system else b"") + ca_pem
    if not CONTROLLER_CA_BUNDLE.exists() or CONTROLLER_CA_BUNDLE.read_bytes() != bundle:
        CONTROLLER_CA_BUNDLE.write_bytes(bundle)
    try:
        registry.add_host(REGISTRY_HOST, REGISTRY_IP)
    except OSError as exc:
        log(f"cannot map {REGISTRY_HOST} in {registry.HOSTS_FILE} ({exc}): the controller's image preflight "
            "will say it cannot reach the registry")


def controller_env() -> dict:
    """What a controller process needs to reach and trust the stand-in's registry (empty before `up`).

    The registry's name bypasses the proxy (the emulator's environment has a dead one to stop stray
    calls): /etc/hosts sends it to loopback.
    """
    if not CONTROLLER_CA_BUNDLE.exists():
        return {}
    env = {"SSL_CERT_FILE": str(CONTROLLER_CA_BUNDLE)}
    for key in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in os.environ.get(key, "").split(",") if h]
        env[key] = ",".join(hosts + ([] if REGISTRY_HOST in hosts else [REGISTRY_HOST]))
    return env


# --------------------------------------------------------------------------- instances

def up_golden(dlami_image: str, tags: list[str], registry_up: bool) -> dict:
    """The golden AMI's seed (the training image pulled by an instance's Docker); AMI id -> spec.

    Built only with the registry up (the seed is pulled from it); without, an existing seed is
    used, and without one the golden AMI's instances boot as the plain AMI's (logged).
    """
    training = images.tags()["training"]
    seed = golden.seed_name(dlami_image, training, tags) if images.exists(training) else ""
    if not registry_up and not (seed and golden.complete(seed)):
        log(f"no seed for the golden AMI {emulator.GOLDEN_AMI_ID} yet: `up` with the registry builds it")
        return {}
    golden.build(seed, dlami_image, [f"{REGISTRY_HOST}/{ref}" for ref in tags],
                 {"host": REGISTRY_HOST, "ip": REGISTRY_IP, "user": REGISTRY_USER, "password": REGISTRY_PASSWORD},
                 instances.CERTS_D)
    return {emulator.GOLDEN_AMI_ID: {"image": dlami_image, "seed": seed}}


def up_instances(tags: list[str], registry_up: bool) -> None:
    built = images.build(["instance", "dlami"])
    image = built["instance"]
    instances.CERTS_D.mkdir(parents=True, exist_ok=True)
    amis = up_golden(built["dlami"], tags, registry_up)
    hosts = {REGISTRY_HOST: REGISTRY_IP}
    code = hashlib.sha256(Path(instances.__file__).read_bytes() + Path(golden.__file__).read_bytes()).hexdigest()[:12]
    fingerprint = hashlib.sha256(json.dumps([image, hosts, code, instances.SSH_PORT,
                                             instances.IMDS_PORT, amis]).encode()).hexdigest()[:16]
    instances.start_daemon(image, hosts, fingerprint, amis)


def down_instances() -> None:
    """Stop the reconciler and the instance containers (what a power cut does: disks stay)."""
    instances.stop_daemon()
    running = [name for name, state in instances.containers().items() if state == "running"]
    if running:
        docker("stop", *running, check=False)


# --------------------------------------------------------------------------- vars

def host_vars() -> dict:
    """Host variables of every instance the provision role adds (templated per instance)."""
    hv = {
        # The instance's own loopback address, computed from its id as instances.address() does.
        "ansible_host": instances.ADDRESS_JINJA,
        # A new instance, a new host key: keep them out of the user's known_hosts.
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/dev/null",
        # The address the run's other instances reach this one by (a multi-node job's rendezvous and
        # collectives): the emulator's private address leads nowhere here, but every instance shares the
        # host's loopback, so the same loopback address as SSH; and the loopback interface for gloo and
        # NCCL, which would otherwise take the host name's address, off the loopback.
        "cloudtrain_node_address": instances.ADDRESS_JINJA,
        "cloudtrain_node_ifname": "lo",
    }
    if instances.SSH_PORT != 22:
        hv["ansible_port"] = instances.SSH_PORT
    return hv


def play_vars(tags: list[str]) -> dict:
    images_ = [f"{REGISTRY_HOST}/{ref}" for ref in tags]
    return {
        # The provision role's hook for host variables: SSH to the instance's loopback address;
        # user, key file and become stay the role's (ec2-user, the run's key pair, sudo).
        "provision_host_vars": host_vars(),
        # The run's generated private keys: the stand-in's own folder, never the user's ~/.ssh
        # (another stand-in on the machine has key pairs of the same names).
        "provision_key_dir": str(STATE / "keys"),
        # The nested Docker daemon must not touch the host's network (see NESTED_DAEMON_OPTIONS).
        "docker_daemon_options": dict(NESTED_DAEMON_OPTIONS),
        "standin_registry": REGISTRY_HOST,
        "standin_training_images": images_,
        "standin_training_image": images_[0],
        "standin_aws_endpoint_url": emulator.URL,
        "standin_region": REGION,
        "standin_state_dir": str(STATE),
        # The golden AMI (training image already pulled): tests that do not test the pull pass it
        # as provision_ami_id; a play that does not (the demo) launches the plain AMI and pulls.
        "standin_golden_ami_id": emulator.GOLDEN_AMI_ID,
    }


def vars_path(name: str | None = None) -> Path:
    # --instance-name (older callers): the same variables under their own file name.
    return STATE / (f"vars-{name}.yml" if name else "vars.yml")


def golden_ami_known() -> bool:
    """Whether the running emulator holds the golden AMI (one started by older code does not)."""
    try:
        instances.clients()["ec2"].describe_images(ImageIds=[emulator.GOLDEN_AMI_ID])
        return True
    except Exception:  # noqa: BLE001  (InvalidAMIID.NotFound, or no emulator at all)
        return False


def write_vars(tags: list[str], name: str | None = None) -> Path:
    path = vars_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    play = play_vars(tags)
    if not golden_ami_known():
        # Tests then launch the plain AMI: slower, not wrong.
        log(f"the emulator at {emulator.URL} has no golden AMI (started by older code?): "
            "`python tests/standin/emulator.py stop`, then `up`, to get it")
        del play["standin_golden_ami_id"]
    # JSON is YAML: readable by include_vars / -e @file without PyYAML here.
    path.write_text("---\n" + json.dumps(play, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- commands

def cmd_up(args) -> None:
    started = time.monotonic()
    only = _only(args)
    if "emulator" in only:
        emulator.start()
    if "registry" in only:
        up_registry(args.training_tag)
    if "instances" in only:
        up_instances(args.training_tag, "registry" in only)
    path = write_vars(args.training_tag)
    if args.instance_name:
        write_vars(args.training_tag, args.instance_name)
    log(f"up ({', '.join(c for c in COMPONENTS if c in only)}) in {time.monotonic() - started:.1f}s; vars in {path}")


def _only(args) -> set[str]:
    only = {ALIASES.get(c, c) for c in args.only.split(",")} if args.only else set(COMPONENTS)
    unknown = only - set(COMPONENTS)
    if unknown:
        raise SystemExit(f"unknown component(s) {sorted(unknown)}; choose from {COMPONENTS}")
    return only


def cmd_down(args) -> None:
    only = _only(args)
    if args.instance_name:
        # Older callers dropping "their" instance: a run's instances go with its teardown now, and
        # the reconciler serves everyone; only their vars file goes.
        vars_path(args.instance_name).unlink(missing_ok=True)
        only.discard("instances")
    if "instances" in only:
        down_instances()
    if "registry" in only:
        registry.stop(REGISTRY_NAME)
        registry.remove_host(REGISTRY_HOST)
    # The emulator is shared by everything on the machine: stopped only when asked for by name.
    if args.only and "emulator" in only:
        emulator.stop()


def fleet_status() -> list[dict]:
    """Every instance the emulator knows, with its container's state (absent when it has none)."""
    have = instances.containers()
    rows = []
    if emulator.is_up():
        ec2 = instances.clients()["ec2"]
        for res in ec2.describe_instances()["Reservations"]:
            for inst in res["Instances"]:
                iid = inst["InstanceId"]
                notice = instances.interrupt_notice(iid)
                rows.append({"instance_id": iid, "type": inst["InstanceType"],
                             "name": {t["Key"]: t["Value"] for t in inst.get("Tags", [])}.get("Name", ""),
                             "emulator": inst["State"]["Name"], "container": have.pop(iid, "absent"),
                             "ssh": f"{instances.address(iid)}:{instances.SSH_PORT}",
                             "notice": notice["time"] if notice else ""})
    rows += [{"instance_id": iid, "type": "", "name": "", "emulator": "absent", "container": state,
              "ssh": "", "notice": ""} for iid, state in have.items()]
    return rows


def cmd_status(args) -> int:
    status = {
        "emulator": "up" if emulator.is_up() else "down",
        "registry": "up" if registry.status(REGISTRY_NAME) else "down",
        "instances": "up" if instances.daemon_pid() else "down",
        "fleet": fleet_status(),
    }
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(" ".join(f"{k}: {status[k]}" for k in COMPONENTS))
        cols = ("instance_id", "type", "name", "emulator", "container", "ssh", "notice")
        table = [cols] + [tuple(str(row[c]) for c in cols) for row in status["fleet"]]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        for row in table:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0 if all(status[k] == "up" for k in COMPONENTS) else 1


def cmd_interrupt(args) -> int:
    """A spot interruption: the notice in the instance's metadata now, termination after it."""
    ec2 = instances.clients()["ec2"]
    found = [i for r in ec2.describe_instances(InstanceIds=[args.instance_id])["Reservations"] for i in r["Instances"]]
    if not found or found[0]["State"]["Name"] not in instances.LIVE:
        raise SystemExit(f"{args.instance_id} is not running")
    deadline = time.time() + args.notice
    notice = {"action": "terminate", "deadline": deadline,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline))}
    instances.INTERRUPTS_DIR.mkdir(parents=True, exist_ok=True)
    (instances.INTERRUPTS_DIR / f"{args.instance_id}.json").write_text(json.dumps(notice))
    log(f"{args.instance_id}: interruption notice posted; terminated at {notice['time']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "vars", "env"):
        p = sub.add_parser(name)
        if name in ("up", "vars"):
            p.add_argument("--training-tag", action="append",
                           help="<repository>:<tag> to push the training image to (default: what the "
                                "resolver picks for a CPU instance), repeatable")
        if name in ("up", "down"):
            p.add_argument("--only", help=f"comma-separated subset of {','.join(COMPONENTS)} "
                           "(down: default instances and registry; the emulator only when named)")
            # Older callers: `up` also writes vars-NAME.yml; the instances are the emulator's now.
            p.add_argument("--instance-name", help=argparse.SUPPRESS)
            p.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
        if name == "status":
            p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("interrupt", help="spot interruption notice, then termination")
    p.add_argument("instance_id")
    p.add_argument("--notice", type=float, default=120.0, help="seconds from notice to termination (AWS: 120)")
    args = parser.parse_args(argv)
    if getattr(args, "training_tag", None) is None and args.cmd in ("up", "vars"):
        args.training_tag = default_training_refs()
    if args.cmd == "up":
        cmd_up(args)
    elif args.cmd == "down":
        cmd_down(args)
    elif args.cmd == "status":
        return cmd_status(args)
    elif args.cmd == "interrupt":
        return cmd_interrupt(args)
    elif args.cmd == "env":
        for key, value in controller_env().items():
            print(f"export {key}={shlex.quote(value)}")
    else:
        print("---\n" + json.dumps(play_vars(args.training_tag), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
