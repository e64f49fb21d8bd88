"""The local stand-in for an ECR registry: Debian's docker-registry (v2.8) with TLS and htpasswd.

It runs the registry as a plain process (not a container) on a loopback address, with its own CA,
a server certificate for the names and addresses it stands in for, bcrypt htpasswd auth and
filesystem storage. Everything lives under ``<repo>/.cache/standin/registry-<name>/`` (or
``$CLOUDTRAIN_STANDIN_STATE/registry-<name>/``)::

    ca.crt ca.key        the CA (give ca.crt to Docker: /etc/docker/certs.d/<host:port>/ca.crt)
    server.crt server.key  the server certificate: SANs = dns_names + ips (+ the listen IP)
    htpasswd             bcrypt entry for the one user
    config.yml           the registry's configuration
    storage/             the images (kept across stop/start; stop(name, purge=True) removes it)
    registry.pid registry.log state.json

Python API (import it with ``sys.path.insert(0, "<repo>/tests/standin")``)::

    info = registry.start("dlc", listen="127.0.0.1:443", user="AWS",
                          password="763104351884-auth-token",
                          dns_names=["763104351884.dkr.ecr.us-east-1.amazonaws.com"])
    info["address"]    # what `docker login/pull` uses: the first DNS name (or the listen address),
                       # with ":port" unless the port is 443
    info["ca_cert"]    # path of the CA certificate
    registry.stop("dlc")

``start`` is idempotent: a registry of that name that is running with the same configuration is
reused (returned as is, ``info["reused"] = True``); one with another configuration is restarted.
It returns once ``GET https://<listen>/v2/`` answers 401 (auth required) over verified TLS.

``make_tls(directory, dns_names, ips)`` and ``write_htpasswd(path, user, password)`` are usable on
their own. ``host_entry(name, ip)`` maps a name to a loopback address
in /etc/hosts with a tagged line and removes it on exit (``add_host``/``remove_host`` do the two
halves). ``docker_trust(host, ca_cert)`` is a context manager that puts the CA in
``/etc/docker/certs.d/<host>/ca.crt`` and removes exactly what it added on exit (Docker reads that
folder on every connection, no daemon restart). Docker does not check certificates of registries
on 127.0.0.0/8 (its default insecure range), so a real TLS test serves on ``[::1]:<port>``.

CLI, run as `.venv/bin/python tests/standin/registry.py ...` (the password comes from
--password-env VAR or stdin, never from argv)::

    registry.py start --name dlc --listen 127.0.0.1:443 --user AWS --password-env REGISTRY_PASSWORD \\
        --dns 763104351884.dkr.ecr.us-east-1.amazonaws.com [--ip 127.0.0.1]   # prints info as JSON
    registry.py stop --name dlc [--purge]
    registry.py status --name dlc        # exit 0 when it is up
    registry.py trust --name dlc [--host HOST]    # writes certs.d/<host>/ca.crt (undo: untrust)
    registry.py untrust --name dlc [--host HOST]
    registry.py map-host --host NAME [--ip 127.0.0.1]   # tagged /etc/hosts line (undo: unmap-host)
    registry.py unmap-host --host NAME

Needs: /usr/bin/docker-registry (Debian docker-registry), htpasswd (apache2-utils), openssl.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE_ROOT = Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", REPO / ".cache" / "standin"))
REGISTRY_BIN = os.environ.get("CLOUDTRAIN_REGISTRY_BIN", "/usr/bin/docker-registry")
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
# Marker stored next to a ca.crt this tool wrote, so untrust never removes someone else's file.
_TRUST_MARKER = ".cloudtrain-standin"


# --------------------------------------------------------------------------- addresses

def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:443' -> ('127.0.0.1', 443); '[::1]:5443' -> ('::1', 5443)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen must be HOST:PORT or [IPV6]:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def host_port(host: str, port: int) -> str:
    """The registry address as Docker spells it: brackets for IPv6, no ':443'."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 443 else f"{shown}:{port}"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- TLS

def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_tls(directory, dns_names=(), ips=()) -> dict:
    """A CA and a server certificate signed by it, for the given DNS names and IP addresses.

    Returns {'ca_cert', 'ca_key', 'cert', 'key'} (paths). Keys are 0600. The CA is reused when
    it exists, the server certificate is always made fresh (so its SANs match the arguments).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sans = [f"DNS:{n}" for n in dns_names] + [f"IP:{ipaddress.ip_address(i)}" for i in ips]
    if not sans:
        raise ValueError("make_tls needs at least one DNS name or IP address")
    paths = {k: directory / f for k, f in
             (("ca_cert", "ca.crt"), ("ca_key", "ca.key"), ("cert", "server.crt"), ("key", "server.key"))}
    old = os.umask(0o077)
    try:
        if not (paths["ca_cert"].exists() and paths["ca_key"].exists()):
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-days", "30", "-subj", "/CN=cloudtrain stand-in CA",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                     "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)
        ext = directory / "server.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            f"subjectAltName={','.join(sans)}\n"
        )
        cn = (list(dns_names) + list(ips))[0]
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-subj", f"/CN={cn}", "-keyout", "server.key", "-out", "server.csr",
                 cwd=directory)
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "30", "-extfile", "server.ext", "-out", "server.crt",
                 cwd=directory)
    finally:
        os.umask(old)
    for leftover in ("server.csr", "server.ext", "ca.srl"):
        (directory / leftover).unlink(missing_ok=True)
    paths["ca_cert"].chmod(0o644)
    paths["cert"].chmod(0o644)
    return {k: str(v) for k, v in paths.items()}


# --------------------------------------------------------------------------- auth

def write_htpasswd(path, user: str, password: str) -> str:
    """A bcrypt htpasswd file with one entry (docker-registry accepts only bcrypt).

    The password goes to htpasswd on stdin (-i), never on its command line.
    """
    htpasswd = shutil.which("htpasswd")
    if not htpasswd:
        raise RuntimeError("htpasswd not found: install apache2-utils")
    proc = subprocess.run([htpasswd, "-niB", user], input=password + "\n",
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"htpasswd failed: {proc.stderr.strip()}")
    path = Path(path)
    path.write_text(proc.stdout.strip() + "\n")
    path.chmod(0o600)
    return str(path)


# --------------------------------------------------------------------------- process

def state_dir_for(name: str, state_dir=None) -> Path:
    return Path(state_dir) if state_dir else STATE_ROOT / f"registry-{name}"


def _pid_alive(pid: int) -> bool:
    """True when pid is a running docker-registry (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"registry" in cmdline.split(b"\0")[0] and b"serve" in cmdline


def _read_state(sdir: Path) -> dict | None:
    try:
        return json.loads((sdir / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _probe(listen: str, ca_cert: str, server_name: str, timeout: float = 2.0) -> int | None:
    """HTTP status of GET /v2/ over TLS verified against ca_cert, None when it does not answer.

    Connects to the listen address but verifies the certificate for server_name (the name
    clients use), so the probe needs no /etc/hosts entry.
    """
    host, port = split_listen(listen)
    ctx = ssl.create_default_context(cafile=ca_cert)
    request = (f"GET /v2/ HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n").encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(request)
                status_line = tls.recv(4096).split(b"\r\n", 1)[0].decode("ascii", "replace")
    except (OSError, ssl.SSLError):
        return None
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def _config_yaml(listen: str, paths: dict, storage: Path, htpasswd: str, secret: str) -> str:
    # JSON is YAML: no PyYAML needed to write it.
    config = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "cloudtrain-standin-registry"}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {
            "addr": listen,
            "secret": secret,
            "tls": {"certificate": paths["cert"], "key": paths["key"]},
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {"htpasswd": {"realm": "cloudtrain-standin", "path": htpasswd}},
    }
    return json.dumps(config, indent=2) + "\n"


def status(name: str, state_dir=None) -> dict | None:
    """The info of a running, answering registry of that name, else None."""
    sdir = state_dir_for(name, state_dir)
    state = _read_state(sdir)
    if not state or not _pid_alive(state["pid"]):
        return None
    if _probe(state["listen"], state["ca_cert"], state["server_name"]) != 401:
        return None
    return state


def start(name: str, listen: str, user: str, password: str, dns_names=(), ips=(),
          state_dir=None, timeout: float = 30.0) -> dict:
    """Start (or reuse) the registry `name`; return its info once /v2/ answers 401 over TLS."""
    if not Path(REGISTRY_BIN).exists():
        raise RuntimeError(f"{REGISTRY_BIN} not found: install Debian's docker-registry package")
    host, port = split_listen(listen)
    dns_names = list(dns_names)
    ips = [str(ipaddress.ip_address(i)) for i in ips]
    if _is_ip(host) and str(ipaddress.ip_address(host)) not in ips:
        ips.append(str(ipaddress.ip_address(host)))
    sdir = state_dir_for(name, state_dir)
    fingerprint = hashlib.sha256(json.dumps(
        [listen, user, hashlib.sha256(password.encode()).hexdigest(), dns_names, ips]).encode()
    ).hexdigest()

    running = status(name, state_dir)
    if running and running.get("fingerprint") == fingerprint:
        return dict(running, reused=True)
    if running or _read_state(sdir):
        stop(name, state_dir=state_dir)

    sdir.mkdir(parents=True, exist_ok=True)
    paths = make_tls(sdir, dns_names, ips)
    htpasswd = write_htpasswd(sdir / "htpasswd", user, password)
    storage = sdir / "storage"
    storage.mkdir(exist_ok=True)
    config = sdir / "config.yml"
    config.write_text(_config_yaml(listen, paths, storage, htpasswd, secrets.token_hex(16)))
    config.chmod(0o600)

    # Only what the registry needs: no REGISTRY_* overrides or proxies from the caller's env.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(sdir)}
    log_path = sdir / "registry.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=sdir, start_new_session=True)
    server_name = dns_names[0] if dns_names else host
    address_host = dns_names[0] if dns_names else host
    info = {
        "name": name,
        "listen": listen,
        "address": host_port(address_host, port),
        "listen_address": host_port(host, port),
        "server_name": server_name,
        "dns_names": dns_names,
        "ips": ips,
        "user": user,
        "pid": proc.pid,
        "state_dir": str(sdir),
        "config": str(config),
        "storage": str(storage),
        "htpasswd": htpasswd,
        "log": str(log_path),
        "fingerprint": fingerprint,
        **paths,
    }
    (sdir / "registry.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"docker-registry exited with {proc.returncode}; log {log_path}:\n{tail}")
        code = _probe(listen, paths["ca_cert"], server_name)
        if code == 401:
            (sdir / "state.json").write_text(json.dumps(info, indent=2))
            return dict(info, reused=False)
        time.sleep(0.2)
    _kill(proc.pid)
    raise RuntimeError(f"docker-registry did not answer 401 on https://{listen}/v2/ within "
                       f"{timeout:.0f}s; see {log_path}")


def _kill(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            # Reap it when it is our child; otherwise just watch for it to go.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not _pid_alive(pid):
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(name: str, state_dir=None, purge: bool = False) -> None:
    """Stop the registry `name` (no-op when it is not running); purge=True also deletes its state."""
    sdir = state_dir_for(name, state_dir)
    state = _read_state(sdir)
    pid_file = sdir / "registry.pid"
    pid = state["pid"] if state else (int(pid_file.read_text()) if pid_file.exists() else None)
    if pid and _pid_alive(pid):
        _kill(pid)
    (sdir / "state.json").unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    if purge and sdir.exists():
        shutil.rmtree(sdir)


# --------------------------------------------------------------------------- docker trust

def trust(host: str, ca_cert, certs_d=DOCKER_CERTS_D) -> Path:
    """Put ca_cert in <certs_d>/<host>/ca.crt (host as Docker spells it, e.g. '[::1]:5443')."""
    target_dir = Path(certs_d) / host
    target = target_dir / "ca.crt"
    if target.exists() and not (target_dir / _TRUST_MARKER).exists():
        raise RuntimeError(f"{target} exists and was not written by the stand-in: not replacing it")
    created_dir = not target_dir.exists()
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_cert, target)
    target.chmod(0o644)
    (target_dir / _TRUST_MARKER).write_text("created-dir\n" if created_dir else "kept-dir\n")
    return target


def untrust(host: str, certs_d=DOCKER_CERTS_D) -> None:
    """Undo trust(): remove the ca.crt it wrote, and the folders it created."""
    certs_d = Path(certs_d)
    target_dir = certs_d / host
    marker = target_dir / _TRUST_MARKER
    if not marker.exists():
        return
    created_dir = marker.read_text().strip() == "created-dir"
    (target_dir / "ca.crt").unlink(missing_ok=True)
    marker.unlink()
    if created_dir:
        with contextlib.suppress(OSError):
            target_dir.rmdir()
    # certs.d itself: remove it only when it is now empty (this tool may have made it).
    with contextlib.suppress(OSError):
        certs_d.rmdir()


@contextlib.contextmanager
def docker_trust(host: str, ca_cert, certs_d=DOCKER_CERTS_D):
    """Trust ca_cert for registry host while the block runs; undone on exit."""
    certs_d_existed = Path(certs_d).exists()
    path = trust(host, ca_cert, certs_d)
    try:
        yield path
    finally:
        untrust(host, certs_d)
        if certs_d_existed:
            Path(certs_d).mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------- /etc/hosts

HOSTS_FILE = Path("/etc/hosts")
_HOSTS_TAG = "# cloudtrain-standin"


def add_host(name: str, ip: str, hosts_file=HOSTS_FILE) -> bool:
    """Map name to ip in /etc/hosts (a tagged line); False when that exact line is already there.

    The file is rewritten in place (not replaced), because in containers it is a bind mount.
    """
    line = f"{ipaddress.ip_address(ip)} {name} {_HOSTS_TAG}"
    hosts_file = Path(hosts_file)
    lines = hosts_file.read_text().splitlines()
    if line in lines:
        return False
    with open(hosts_file, "a") as handle:
        handle.write(("" if not lines or hosts_file.read_text().endswith("\n") else "\n") + line + "\n")
    return True


def remove_host(name: str, hosts_file=HOSTS_FILE) -> None:
    """Remove the tagged lines add_host wrote for name (other lines stay untouched)."""
    hosts_file = Path(hosts_file)
    lines = hosts_file.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not (ln.rstrip("\n").endswith(_HOSTS_TAG) and name in ln.split()[1:-2])]
    if kept != lines:
        with open(hosts_file, "r+") as handle:
            handle.seek(0)
            handle.write("".join(kept))
            handle.truncate()


@contextlib.contextmanager
def host_entry(name: str, ip: str, hosts_file=HOSTS_FILE):
    """name resolves to ip while the block runs (removed on exit only if this added it)."""
    added = add_host(name, ip, hosts_file)
    try:
        yield
    finally:
        if added:
            remove_host(name, hosts_file)


# --------------------------------------------------------------------------- CLI

def _password(args) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise SystemExit(f"environment variable {args.password_env} is not set")
        return value
    if sys.stdin.isatty():
        raise SystemExit("give the password with --password-env VAR or on stdin")
    return sys.stdin.readline().rstrip("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start or reuse a registry; prints its info as JSON")
    p_start.add_argument("--listen", required=True, help="HOST:PORT, e.g. 127.0.0.1:443 or [::1]:5443")
    p_start.add_argument("--user", required=True)
    p_start.add_argument("--password-env", help="read the password from this environment variable "
                         "(default: first line of stdin)")
    p_start.add_argument("--dns", action="append", default=[], help="DNS name for the certificate")
    p_start.add_argument("--ip", action="append", default=[], help="IP address for the certificate")
    p_stop = sub.add_parser("stop")
    p_stop.add_argument("--purge", action="store_true", help="also delete certificates and storage")
    p_status = sub.add_parser("status")
    p_trust = sub.add_parser("trust", help="copy the CA to /etc/docker/certs.d/<host>/ca.crt")
    p_untrust = sub.add_parser("untrust", help="remove what `trust` wrote")
    for p in (p_start, p_stop, p_status, p_trust, p_untrust):
        p.add_argument("--name", required=True)
        p.add_argument("--state-dir", help="default: <repo>/.cache/standin/registry-<name>")
    for p in (p_trust, p_untrust):
        p.add_argument("--host", help="registry host as Docker spells it (default: the info's address)")
    p_map = sub.add_parser("map-host", help="add a tagged '<ip> <host>' line to /etc/hosts")
    p_unmap = sub.add_parser("unmap-host", help="remove the line map-host added")
    for p in (p_map, p_unmap):
        p.add_argument("--host", required=True)
    p_map.add_argument("--ip", default="127.0.0.1")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "start":
            info = start(args.name, args.listen, args.user, _password(args), args.dns, args.ip,
                         state_dir=args.state_dir)
            print(json.dumps(info, indent=2))
        elif args.cmd == "stop":
            stop(args.name, state_dir=args.state_dir, purge=args.purge)
        elif args.cmd == "map-host":
            add_host(args.host, args.ip)
        elif args.cmd == "unmap-host":
            remove_host(args.host)
        elif args.cmd == "status":
            info = status(args.name, state_dir=args.state_dir)
            print(json.dumps(info, indent=2) if info else "down")
            return 0 if info else 1
        else:
            info = _read_state(state_dir_for(args.name, args.state_dir))
            if not info and (args.cmd == "trust" or not args.host):
                raise SystemExit(f"registry {args.name} has no state: start it first")
            host = args.host or info["address"]
            if args.cmd == "trust":
                print(trust(host, info["ca_cert"]))
            else:
                untrust(host)
    except (RuntimeError, ValueError) as exc:
        print(f"registry.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
