"""The local AWS stand-in: moto in server mode on 127.0.0.1 (emulator_server.py).

One process serves every test, the demo and Molecule. `start` reuses a running emulator,
`reset` empties it, `env` prints the guard-rail environment that points AWS clients at it
and makes any call that misses it fail at once (dead proxy, no instance metadata).

    python tests/standin/emulator.py start|stop|reset|status|env
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
PORT = int(os.environ.get("CLOUDTRAIN_EMULATOR_PORT", "5055"))
URL = f"http://{HOST}:{PORT}"
STATE_DIR = Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", Path(__file__).resolve().parents[2] / ".cache" / "standin"))
PID_FILE = STATE_DIR / "moto.pid"
LOG_FILE = STATE_DIR / "moto.log"

# The stand-in's "golden" AMI: a Deep Learning AMI as a team bakes it, Docker installed and the
# training image already pulled (emulator_server.py adds it to every region's images, again after
# each reset; instances.py boots its instances with the seeded Docker data folder). An x86_64
# Amazon Linux image by its name, so the collection logs in as ec2-user.
GOLDEN_AMI_ID = "ami-0c7d1a9e5eed00001"
GOLDEN_AMI_NAME = "cloudtrain-standin-dlami-al2023-x86_64-training-image-pulled"

# What the emulator validates like AWS does (issue: AMI, key pair and instance type checks on).
SERVER_ENV = {
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
}

# Clients: dummy credentials, the emulator as endpoint, and a dead proxy on loopback so that
# anything that does not go to the emulator fails instead of leaving the machine.
CLIENT_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": URL,
    "AWS_EC2_METADATA_DISABLED": "true",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost,::1",
    "no_proxy": "127.0.0.1,localhost,::1",
}


def _request(path: str, method: str = "GET", timeout: float = 2.0) -> bytes:
    # Talk to the emulator directly: never through a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(URL + path, method=method, data=b"" if method == "POST" else None)
    with opener.open(req, timeout=timeout) as resp:
        return resp.read()


def is_up() -> bool:
    # The dashboard page is small; data.json grows to megabytes once IAM's managed policies load.
    try:
        _request("/moto-api/")
        return True
    except (urllib.error.URLError, OSError):
        return False


def _server_command() -> list[str]:
    # moto's server plus the public SSM parameters moto lacks (emulator_server.py).
    return [sys.executable, str(Path(__file__).resolve().with_name("emulator_server.py"))]


def start(timeout: float = 60.0) -> None:
    if is_up():
        return
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env.update(SERVER_ENV)
    with open(LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [*_server_command(), "-H", HOST, "-p", str(PORT)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"moto_server exited with {proc.returncode}; see {LOG_FILE}")
        if is_up():
            # Only a server that answers owns the pid file (a loser of a start race exits above).
            PID_FILE.write_text(str(proc.pid))
            return
        time.sleep(0.2)
    raise SystemExit(f"moto_server did not answer on {URL} within {timeout:.0f}s; see {LOG_FILE}")


def stop() -> None:
    if not PID_FILE.exists():
        return
    pid = int(PID_FILE.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    PID_FILE.unlink(missing_ok=True)


def reset() -> None:
    _request("/moto-api/reset", method="POST", timeout=10)


def resources() -> dict:
    """Everything the emulator holds, by service and resource type (moto's own dump)."""
    return json.loads(_request("/moto-api/data.json", timeout=10))


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd == "start":
        start()
        print(f"emulator up on {URL}")
    elif cmd == "stop":
        stop()
    elif cmd == "reset":
        reset()
    elif cmd == "status":
        print("up" if is_up() else "down")
        return 0 if is_up() else 1
    elif cmd == "env":
        for key, value in CLIENT_ENV.items():
            print(f"export {key}={value}")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
