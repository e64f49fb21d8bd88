"""What cloud-init does on an EC2 instance, the parts the collection relies on.

    cloud-init.py init    (before sshd)  host keys and the key pair's public half for the login user,
                                         user data saved; once per instance, like cloud-init
    cloud-init.py final   (after sshd)   runs the user data script, first boot only

Everything comes from the instance metadata service (IMDSv2: a token first), found through
AWS_EC2_METADATA_SERVICE_ENDPOINT as every AWS SDK finds it (the unit reads /etc/environment).
"""
import os
import pwd
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

LOGIN_USER = "ec2-user"
STATE = Path("/var/lib/cloud")
SCRIPT = STATE / "instance" / "scripts" / "part-001"
ENDPOINT = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254/").rstrip("/")
# Metadata never goes through a proxy.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg: str) -> None:
    print(f"cloud-init: {msg}", flush=True)


def token() -> str:
    req = urllib.request.Request(ENDPOINT + "/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    deadline = time.monotonic() + 60
    while True:
        try:
            with OPENER.open(req, timeout=2) as resp:
                return resp.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"cloud-init: no metadata service at {ENDPOINT}: {exc}")
            time.sleep(0.2)


def get(path: str, tok: str) -> bytes | None:
    req = urllib.request.Request(ENDPOINT + "/latest/" + path, headers={"X-aws-ec2-metadata-token": tok})
    try:
        with OPENER.open(req, timeout=5) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def init() -> None:
    tok = token()
    instance_id = get("meta-data/instance-id", tok).decode()
    marker = STATE / "data" / "instance-id"
    if marker.exists() and marker.read_text().strip() == instance_id:
        log(f"{instance_id}: already initialised (a restart keeps its disk)")
        return
    # A new instance: its own host keys, not the image's.
    for key in Path("/etc/ssh").glob("ssh_host_*"):
        key.unlink()
    subprocess.run(["ssh-keygen", "-A"], check=True, stdout=subprocess.DEVNULL)
    user = pwd.getpwnam(LOGIN_USER)
    ssh_dir = Path(user.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    public_key = get("meta-data/public-keys/0/openssh-key", tok)
    keys = ssh_dir / "authorized_keys"
    keys.write_bytes(public_key or b"")
    keys.chmod(0o600)
    for path in (ssh_dir, keys):
        os.chown(path, user.pw_uid, user.pw_gid)
    user_data = get("user-data", tok)
    SCRIPT.parent.mkdir(parents=True, exist_ok=True)
    if user_data and user_data.startswith(b"#!"):
        SCRIPT.write_bytes(user_data)
        SCRIPT.chmod(0o700)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(instance_id + "\n")
    log(f"{instance_id}: host keys, {'a key for ' + LOGIN_USER if public_key else 'no key pair'}, "
        f"{'a user data script' if SCRIPT.exists() else 'no user data script'}")


def final() -> None:
    done = STATE / "instance" / "user-data.done"
    if not SCRIPT.exists() or done.exists():
        return
    done.touch()  # first boot only, even when the script fails (as cloud-init's scripts-user)
    proc = subprocess.run([str(SCRIPT)], check=False)
    log(f"user data script exited with {proc.returncode}")


if __name__ == "__main__":
    {"init": init, "final": final}[sys.argv[1]]()
