"""The stand-in's EC2 instances: one container per emulator instance, in step with the emulator.

    python tests/standin/instances.py run IMAGE HOSTS [AMIS]   # the daemon; `standin.py up` starts it
    python tests/standin/instances.py address INSTANCE_ID

A reconciler polls the emulator (DescribeInstances) and Docker (containers labelled with this
stand-in's emulator) every POLL seconds and makes them agree, both ways:

  emulator pending/running   -> container running: created on first sight (a fresh boot of the
                                instance image), started again when it was stopped (same disk)
  emulator stopping/stopped  -> container stopped (its disk and the nested Docker's volume kept)
  emulator terminated/gone   -> container and volume removed (gone: the emulator was reset)
  container exited by itself -> StopInstances (a `poweroff` inside), TerminateInstances when the
  while the emulator runs it    instance's shutdown behaviour says terminate
  interruption notice due    -> TerminateInstances (`standin.py interrupt` wrote the notice)

Every instance has its own loopback address, ADDRESS(instance id) = 127.<100 + a % 100>.<b>.<c>
from the id's last three bytes: sshd listens on <address>:SSH_PORT (22 unless
CLOUDTRAIN_STANDIN_SSH_PORT says otherwise), and the reconciler serves the instance's metadata
(IMDSv2) on <address>:IMDS_PORT. The instance finds both endpoints as every SDK does:
/etc/environment holds AWS_EC2_METADATA_SERVICE_ENDPOINT and AWS_ENDPOINT_URL (the emulator).
The instance image's cloud-init stand-in installs the key pair's public half for ec2-user and
runs the user data at first boot, both read from that metadata service.

An instance of an AMI listed in AMIS (JSON: AMI id -> {"image", "seed"}; the golden AMI, see
golden.py) boots that image instead, with its Docker volume filled from the seed volume first;
every other AMI boots IMAGE with an empty Docker volume.
"""
from __future__ import annotations

import base64
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import emulator  # noqa: E402
import golden  # noqa: E402

STATE = emulator.STATE_DIR
DOCKER = os.environ.get("DOCKER", "docker")
POLL = float(os.environ.get("CLOUDTRAIN_STANDIN_POLL", "0.5"))
SSH_PORT = int(os.environ.get("CLOUDTRAIN_STANDIN_SSH_PORT", "22"))
IMDS_PORT = int(os.environ.get("CLOUDTRAIN_STANDIN_IMDS_PORT", "80"))
# Containers of this stand-in carry its emulator's URL: another stand-in's are never touched.
FLEET_LABEL = "cloudtrain.standin.fleet"
INSTANCE_LABEL = "cloudtrain.standin.instance"
FLEET = emulator.URL
PID_FILE = STATE / "instances.pid"
LOG_FILE = STATE / "instances.log"
INSTANCES_DIR = STATE / "instances"
INTERRUPTS_DIR = STATE / "interrupts"
CERTS_D = STATE / "instance-certs.d"
# Extra "IP NAME" lines every new instance resolves (as a VPC's private DNS would).
HOSTS_FILE = STATE / "hosts"
REGION = "us-east-1"
LIVE = ("pending", "running")
DOWN = ("stopping", "stopped")


def address(instance_id: str) -> str:
    """The instance's own loopback address (playbooks compute the same from the id; see play vars)."""
    tail = instance_id[-6:]
    return f"127.{100 + int(tail[0:2], 16) % 100}.{int(tail[2:4], 16)}.{int(tail[4:6], 16)}"


# The same formula in Jinja, for provision_host_vars: the role templates it per instance with `item`
# the instance, and once without (argument validation), hence the default.
ADDRESS_JINJA = ("{% set i = item.instance_id | default('i-000000') %}"
                 "127.{{ 100 + (i[-6:-4] | int(base=16)) % 100 }}.{{ i[-4:-2] | int(base=16) }}.{{ i[-2:] | int(base=16) }}")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [instances] {msg}", file=sys.stderr, flush=True)


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], check=check, text=True, capture_output=True)


def clients():
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name=REGION)
    return {name: session.client(name, endpoint_url=emulator.URL) for name in ("ec2", "iam", "sts", "ssm")}


def containers() -> dict[str, str]:
    """instance id -> container state (running, exited, created, ...) of this stand-in's containers."""
    proc = docker("ps", "-a", "--filter", f"label={FLEET_LABEL}={FLEET}",
                  "--format", "{{.Names}} {{.State}}")
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.strip())


def interrupt_notice(instance_id: str) -> dict | None:
    try:
        return json.loads((INTERRUPTS_DIR / f"{instance_id}.json").read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- metadata service

def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Metadata:
    """What the metadata service of one instance answers (IMDSv2: a session token first)."""

    def __init__(self, fleet: "Fleet", instance: dict):
        self.fleet = fleet
        self.instance = instance
        self.tokens: dict[str, float] = {}
        self.credentials: dict | None = None
        self.lock = threading.Lock()

    @property
    def instance_id(self) -> str:
        return self.instance["InstanceId"]

    def tokens_required(self) -> bool:
        return self.instance.get("MetadataOptions", {}).get("HttpTokens", "required") == "required"

    def new_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.time() + ttl
        return token

    def token_ok(self, token: str | None) -> bool:
        if token is None:
            return not self.tokens_required()
        with self.lock:
            return self.tokens.get(token, 0) > time.time()

    def role_credentials(self) -> tuple[str, dict] | None:
        profile = self.instance.get("IamInstanceProfile", {}).get("Arn")
        if not profile:
            return None
        with self.lock:
            cached = self.credentials
            if cached and cached["expires"] - time.time() > 300:
                return cached["role"], cached["document"]
            api = self.fleet.api
            roles = api["iam"].get_instance_profile(InstanceProfileName=profile.rsplit("/", 1)[1])[
                "InstanceProfile"]["Roles"]
            if not roles:
                return None
            role = roles[0]
            creds = api["sts"].assume_role(RoleArn=role["Arn"], RoleSessionName=self.instance_id,
                                           DurationSeconds=6 * 3600)["Credentials"]
            expiration = creds["Expiration"]
            document = {"Code": "Success", "LastUpdated": _iso(datetime.now(timezone.utc)), "Type": "AWS-HMAC",
                        "AccessKeyId": creds["AccessKeyId"], "SecretAccessKey": creds["SecretAccessKey"],
                        "Token": creds["SessionToken"], "Expiration": _iso(expiration)}
            self.credentials = {"role": role["RoleName"], "document": document,
                                "expires": expiration.timestamp()}
            return role["RoleName"], document

    def user_data(self) -> bytes | None:
        attr = self.fleet.api["ec2"].describe_instance_attribute(InstanceId=self.instance_id, Attribute="userData")
        value = attr.get("UserData", {}).get("Value")
        return base64.b64decode(value) if value else None

    def public_key(self) -> tuple[str, str] | None:
        name = self.instance.get("KeyName")
        if not name:
            return None
        pairs = self.fleet.api["ec2"].describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
        return (name, pairs[0]["PublicKey"].strip() + "\n") if pairs and pairs[0].get("PublicKey") else None

    def answer(self, path: str) -> bytes | str | dict | list | None:
        """The body for GET /latest/<path>: str/bytes as is, a list as a listing, a dict as JSON."""
        i = self.instance
        zone = i.get("Placement", {}).get("AvailabilityZone", REGION + "a")
        if path == "user-data":
            return self.user_data()
        if path == "dynamic/instance-identity/document":
            return {"instanceId": self.instance_id, "instanceType": i["InstanceType"], "imageId": i["ImageId"],
                    "region": zone[:-1], "availabilityZone": zone, "privateIp": i.get("PrivateIpAddress", ""),
                    "architecture": i.get("Architecture", "x86_64"), "accountId": "123456789012"}
        if not path.startswith("meta-data"):
            return ["meta-data", "user-data", "dynamic"] if path in ("", "/") else None
        key = path[len("meta-data"):].strip("/")
        simple = {
            "ami-id": i["ImageId"], "instance-id": self.instance_id, "instance-type": i["InstanceType"],
            "hostname": i.get("PrivateDnsName", ""), "local-hostname": i.get("PrivateDnsName", ""),
            "local-ipv4": i.get("PrivateIpAddress", ""), "placement/availability-zone": zone,
            "placement/region": zone[:-1], "instance-life-cycle": i.get("InstanceLifecycle", "on-demand"),
        }
        if i.get("PublicIpAddress"):
            simple["public-ipv4"] = i["PublicIpAddress"]
        if key in simple:
            return simple[key]
        if key == "":
            return sorted({k.split("/")[0] for k in simple} | {"iam/", "public-keys/", "spot/", "placement/"})
        if key == "placement":
            return ["availability-zone", "region"]
        if key.startswith("public-keys"):
            pair = self.public_key()
            if pair is None:
                return None
            return {"public-keys": [f"0={pair[0]}"], "public-keys/0": ["openssh-key"],
                    "public-keys/0/openssh-key": pair[1]}.get(key)
        if key.startswith("iam"):
            found = self.role_credentials()
            if found is None:
                return None
            role, document = found
            profile = i["IamInstanceProfile"]
            return {"iam": ["info", "security-credentials/"],
                    "iam/info": {"Code": "Success", "LastUpdated": document["LastUpdated"],
                                 "InstanceProfileArn": profile["Arn"], "InstanceProfileId": profile.get("Id", "")},
                    "iam/security-credentials": [role],
                    f"iam/security-credentials/{role}": document}.get(key)
        if key.startswith("spot"):
            notice = interrupt_notice(self.instance_id)
            if notice is None:
                return None
            doc = {"action": notice["action"], "time": notice["time"]}
            return {"spot": ["instance-action", "termination-time"], "spot/instance-action": doc,
                    "spot/termination-time": notice["time"]}.get(key)
        return None


class MetadataHandler(http.server.BaseHTTPRequestHandler):
    server_version = "EC2ws"

    def log_message(self, format, *args):  # noqa: A002  (quiet: the fleet log has what matters)
        pass

    def _send(self, code: int, body: bytes = b"", ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):  # noqa: N802
        meta: Metadata = self.server.metadata
        if self.path.rstrip("/") != "/latest/api/token":
            return self._send(404)
        if self.headers.get("X-Forwarded-For"):
            return self._send(403)  # as IMDS: no tokens through a proxy
        try:
            ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
        except ValueError:
            return self._send(400)
        if not 1 <= ttl <= 21600:
            return self._send(400)
        token = meta.new_token(ttl)
        self.send_response(200)
        self.send_header("X-aws-ec2-metadata-token-ttl-seconds", str(ttl))
        self.send_header("Content-Length", str(len(token)))
        self.end_headers()
        self.wfile.write(token.encode())

    def do_GET(self):  # noqa: N802
        meta: Metadata = self.server.metadata
        if not meta.token_ok(self.headers.get("X-aws-ec2-metadata-token")):
            return self._send(401)
        if not self.path.startswith("/latest/"):
            return self._send(200, b"latest\n") if self.path in ("/", "") else self._send(404)
        try:
            body = meta.answer(self.path[len("/latest/"):].split("?")[0].rstrip("/"))
        except Exception:  # noqa: BLE001  (an emulator error is a 500, as IMDS has them too)
            log(f"{meta.instance_id}: metadata {self.path}: {traceback.format_exc(limit=2)}")
            return self._send(500)
        if body is None:
            return self._send(404)
        if isinstance(body, list):
            return self._send(200, "\n".join(body).encode())
        if isinstance(body, dict):
            return self._send(200, json.dumps(body, indent=2).encode(), "application/json")
        return self._send(200, body if isinstance(body, bytes) else str(body).encode())


class MetadataServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, metadata: Metadata):
        self.metadata = metadata
        super().__init__((address(metadata.instance_id), IMDS_PORT), MetadataHandler)


# --------------------------------------------------------------------------- the reconciler

class Fleet:
    def __init__(self, image: str, registry_hosts: dict[str, str], amis: dict[str, dict] | None = None):
        self.image = image
        self.registry_hosts = registry_hosts
        self.amis = amis or {}
        self.api = clients()
        self.servers: dict[str, MetadataServer] = {}
        self.started: set[str] = set()   # containers this daemon saw running
        self.busy: dict[str, threading.Thread] = {}

    # ---- one pass
    def tick(self) -> None:
        records = [i for r in self.api["ec2"].describe_instances()["Reservations"] for i in r["Instances"]]
        known = {i["InstanceId"]: i for i in records}
        have = containers()
        for instance_id, inst in known.items():
            if instance_id in self.busy and self.busy[instance_id].is_alive():
                continue
            self.reconcile(inst, have.get(instance_id))
        for instance_id, state in have.items():
            if instance_id not in known and not (instance_id in self.busy and self.busy[instance_id].is_alive()):
                log(f"{instance_id}: not in the emulator any more: removing its container")
                self._in_background(instance_id, self.remove, instance_id)
        for instance_id in list(self.servers):
            inst = known.get(instance_id)
            if inst is None or inst["State"]["Name"] not in LIVE:
                self.servers.pop(instance_id).shutdown()
            else:
                self.servers[instance_id].metadata.instance = inst

    def reconcile(self, inst: dict, container: str | None) -> None:
        instance_id, state = inst["InstanceId"], inst["State"]["Name"]
        if state in LIVE:
            notice = interrupt_notice(instance_id)
            if notice and time.time() >= notice["deadline"]:
                log(f"{instance_id}: interruption notice ran out: terminating it")
                self.api["ec2"].terminate_instances(InstanceIds=[instance_id])
                return
            self.serve_metadata(inst)
            if container is None:
                self._in_background(instance_id, self.create, inst)
            elif container == "running":
                self.started.add(instance_id)
            elif instance_id in self.started:
                self.started.discard(instance_id)
                self._in_background(instance_id, self.shut_down_from_inside, inst)
            else:
                self._in_background(instance_id, self.start, instance_id)
        elif state in DOWN:
            self.started.discard(instance_id)
            if container == "running":
                self._in_background(instance_id, self.stop, instance_id)
        elif container is not None:
            self.started.discard(instance_id)
            self._in_background(instance_id, self.remove, instance_id)
        elif state == "terminated":
            (INTERRUPTS_DIR / f"{instance_id}.json").unlink(missing_ok=True)

    def _in_background(self, instance_id: str, action, *args) -> None:
        def run():
            try:
                action(*args)
            except Exception:  # noqa: BLE001  (one instance's failure must not stop the fleet)
                log(f"{instance_id}: {action.__name__} failed: {traceback.format_exc()}")
        thread = threading.Thread(target=run, name=f"{action.__name__}-{instance_id}", daemon=True)
        self.busy[instance_id] = thread
        thread.start()

    def serve_metadata(self, inst: dict) -> None:
        if inst["InstanceId"] in self.servers:
            return
        server = MetadataServer(Metadata(self, inst))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[inst["InstanceId"]] = server

    # ---- actions (one at a time per instance)
    def create(self, inst: dict) -> None:
        instance_id = inst["InstanceId"]
        addr = address(instance_id)
        clash = [other for other in self.servers if other != instance_id and address(other) == addr]
        if clash:
            raise RuntimeError(f"address {addr} is already {clash[0]}'s")
        config = INSTANCES_DIR / instance_id
        config.mkdir(parents=True, exist_ok=True)
        (config / "environment").write_text(
            f"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{addr}:{IMDS_PORT}/\n"
            f"AWS_ENDPOINT_URL={emulator.URL}\n")
        (config / "sshd.conf").write_text(f"ListenAddress {addr}:{SSH_PORT}\n")
        CERTS_D.mkdir(parents=True, exist_ok=True)
        hosts = dict(self.registry_hosts)
        if HOSTS_FILE.exists():
            for line in HOSTS_FILE.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    ip, name = line.split()[:2]
                    hosts[name] = ip
        hostname = (inst.get("PrivateDnsName") or instance_id).split(".")[0]
        hosts[hostname] = addr
        started = time.monotonic()
        ami = self.amis.get(inst.get("ImageId", ""))
        image = ami["image"] if ami else self.image
        if ami:
            # The AMI's snapshot: its Docker data (the pulled training image) on the new disk.
            seconds = golden.fill(f"{instance_id}-docker", ami["seed"])
            log(f"{instance_id}: Docker volume filled from {ami['seed']} in {seconds:.1f}s")
        # Everything below replaces --privileged, which cannot start on this kind of machine:
        # systemd needs the cgroup tree writable, the nested dockerd the capabilities and all
        # devices, and /var/lib/docker a real filesystem (overlay2 does not nest on overlay).
        docker(
            "run", "-d", "--name", instance_id, "--hostname", hostname,
            "--label", f"{FLEET_LABEL}={FLEET}", "--label", f"{INSTANCE_LABEL}={instance_id}",
            "--network", "host", "-e", "container=docker",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
            "-v", f"{instance_id}-docker:/var/lib/docker",
            "-v", f"{config}:/etc/cloudtrain-standin:ro",
            "-v", f"{CERTS_D}:/etc/docker/certs.d:ro",
            *[a for name, ip in hosts.items() for a in ("--add-host", f"{name}:{ip}")],
            "--stop-signal", "SIGRTMIN+3", "--stop-timeout", "30",
            image, "/sbin/init",
        )
        self.started.add(instance_id)
        log(f"{instance_id}: booted a new instance container ({inst['InstanceType']}, ssh {addr}:{SSH_PORT}) "
            f"in {time.monotonic() - started:.1f}s")

    def start(self, instance_id: str) -> None:
        docker("start", instance_id)
        self.started.add(instance_id)
        log(f"{instance_id}: started again (same disk)")

    def stop(self, instance_id: str) -> None:
        started = time.monotonic()
        docker("stop", instance_id)
        log(f"{instance_id}: stopped in {time.monotonic() - started:.1f}s (disk kept)")

    def remove(self, instance_id: str) -> None:
        docker("rm", "-f", instance_id, check=False)
        docker("volume", "rm", f"{instance_id}-docker", check=False)
        shutil.rmtree(INSTANCES_DIR / instance_id, ignore_errors=True)
        (INTERRUPTS_DIR / f"{instance_id}.json").unlink(missing_ok=True)
        log(f"{instance_id}: container and volume removed")

    def shut_down_from_inside(self, inst: dict) -> None:
        """The container exited while the emulator runs it: the instance shut itself down."""
        instance_id = inst["InstanceId"]
        behaviour = self.api["ec2"].describe_instance_attribute(
            InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior"
        )["InstanceInitiatedShutdownBehavior"]["Value"]
        if behaviour == "terminate":
            self.api["ec2"].terminate_instances(InstanceIds=[instance_id])
        else:
            self.api["ec2"].stop_instances(InstanceIds=[instance_id])
        log(f"{instance_id}: shut down from inside: {'terminated' if behaviour == 'terminate' else 'stopped'}")

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


def run(image: str, registry_hosts: dict[str, str], amis: dict[str, dict] | None = None) -> None:
    fleet = Fleet(image, registry_hosts, amis)
    log(f"reconciling {emulator.URL} with the containers of image {image} every {POLL}s"
        + "".join(f"; {ami}: {spec['image']} seeded from {spec['seed']}" for ami, spec in (amis or {}).items()))
    try:
        while True:
            try:
                fleet.tick()
            except Exception:  # noqa: BLE001  (the emulator restarting, a docker hiccup: next tick)
                log(f"tick failed: {traceback.format_exc(limit=3)}")
                time.sleep(2)
            time.sleep(POLL)
    finally:
        fleet.close()


# --------------------------------------------------------------------------- the daemon's life

def daemon_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"instances.py" in cmdline else None


def daemon_fingerprint() -> str:
    try:
        return PID_FILE.read_text().split()[1]
    except (OSError, IndexError):
        return ""


def start_daemon(image: str, registry_hosts: dict[str, str], fingerprint: str,
                 amis: dict[str, dict] | None = None) -> None:
    """Start the reconciler (restarted when its image, hosts or code changed)."""
    pid = daemon_pid()
    if pid and daemon_fingerprint() == fingerprint:
        return
    if pid:
        stop_daemon()
    STATE.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    with open(LOG_FILE, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "run", image,
                                 json.dumps(registry_hosts), json.dumps(amis or {})], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    PID_FILE.write_text(f"{proc.pid} {fingerprint}\n")
    time.sleep(0.3)
    if proc.poll() is not None:
        raise SystemExit(f"the instance reconciler exited with {proc.returncode}; see {LOG_FILE}")


def stop_daemon() -> None:
    pid = daemon_pid()
    if pid:
        os.killpg(pid, 15)
        for _attempt in range(50):
            if daemon_pid() is None:
                break
            time.sleep(0.1)
    PID_FILE.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "address":
        print(address(argv[1]))
        return 0
    if len(argv) in (3, 4) and argv[0] == "run":
        run(argv[1], json.loads(argv[2]), json.loads(argv[3]) if len(argv) == 4 else None)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
