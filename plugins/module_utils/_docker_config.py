# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker client's config.json, read and written the way the docker CLI does.

Private helper of cloudtrain.ec2.ecr_login. Secrets pass through memory and stdin only: never
a command line, never a return value.
"""
from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import tempfile

CONFIG_NAME = "config.json"


class DockerConfigError(Exception):
    """The config file or a credential helper could not be used."""


class DockerCliError(Exception):
    """docker could not log in; kind says why: missing, daemon, permission, rejected, tls, failed."""

    def __init__(self, kind, message):
        super(DockerCliError, self).__init__(message)
        self.kind = kind


def default_config_path(owner=None, environ=None):
    """Where the docker CLI of `owner` (default: this process's user) keeps config.json.

    For the current user $DOCKER_CONFIG wins, as for the CLI; for another user (become) it is
    that user's ~/.docker, from the password database rather than $HOME, which sudo may keep.
    """
    environ = os.environ if environ is None else environ
    if owner:
        return os.path.join(pwd.getpwnam(owner).pw_dir, ".docker", CONFIG_NAME)
    if environ.get("DOCKER_CONFIG"):
        return os.path.join(environ["DOCKER_CONFIG"], CONFIG_NAME)
    return os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".docker", CONFIG_NAME)


def load(path):
    """The config as a dict ({} when the file does not exist)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DockerConfigError("cannot read Docker config %s: %s" % (path, exc.strerror))
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise DockerConfigError("Docker config %s is not valid JSON: %s" % (path, exc))
    if not isinstance(config, dict):
        raise DockerConfigError("Docker config %s is not a JSON object" % path)
    return config


def credential_store(config, address):
    """The credential helper the CLI would use for address (credHelpers first), or None."""
    helpers = config.get("credHelpers") or {}
    return helpers.get(address) or config.get("credsStore") or None


def encode_auth(username, password):
    return base64.b64encode(("%s:%s" % (username, password)).encode("utf-8")).decode("ascii")


def stored_credential(config, address, helper_dir=None):
    """(username, password) stored for address, or None.

    Reads auths[address].auth, or asks the credential helper (docker-credential-<store> get,
    address on stdin) when one is configured, as the CLI does.
    """
    store = credential_store(config, address)
    if store:
        helper = shutil.which("docker-credential-%s" % store, path=helper_dir)
        if not helper:
            raise DockerConfigError("the Docker config names credential helper '%s' but "
                                    "docker-credential-%s is not installed" % (store, store))
        proc = subprocess.run([helper, "get"], input=address.encode("utf-8"), check=False,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            # "credentials not found in native keychain" is the helper's "nothing stored".
            return None
        try:
            reply = json.loads(proc.stdout.decode("utf-8"))
        except ValueError:
            return None
        return (reply.get("Username"), reply.get("Secret"))
    entry = (config.get("auths") or {}).get(address) or {}
    if not entry.get("auth"):
        return None
    try:
        username, _sep, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (username, password)


def write_json_private(path, data, uid=None, gid=None):
    """Write JSON atomically with mode 0600 (the CLI's temp-file-and-rename), owned by uid/gid."""
    directory = os.path.dirname(path)
    _make_dir(directory, uid, gid)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as handle:
            # The CLI writes tab-indented JSON.
            json.dump(data, handle, indent="\t")
        os.chmod(tmp, 0o600)
        if uid is not None:
            os.chown(tmp, uid, gid)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _make_dir(directory, uid, gid):
    if os.path.isdir(directory):
        return
    os.makedirs(directory, mode=0o700)
    if uid is not None:
        os.chown(directory, uid, gid)


def write_auth(path, address, username, password, uid=None, gid=None):
    """Store the login in auths[address] as `docker login` does without a credential store."""
    config = load(path)
    config.setdefault("auths", {})[address] = {"auth": encode_auth(username, password)}
    write_json_private(path, config, uid, gid)


def fix_owner(path, uid, gid):
    """Give the config (and its folder) to uid/gid after the CLI, running as root, wrote it."""
    for target in (os.path.dirname(path), path):
        if os.path.exists(target):
            os.chown(target, uid, gid)
    if os.path.exists(path):
        os.chmod(path, 0o600)


# --------------------------------------------------------------------------- docker CLI

_DAEMON_DOWN = ("cannot connect to the docker daemon", "is the docker daemon running", "error during connect")
_PERMISSION = ("permission denied while trying to connect",)
_TLS = ("x509:", "tls: ", "certificate")
_REJECTED = ("unauthorized", "authentication required", "401", "incorrect username or password")


def classify(stderr):
    """Which kind of failure a docker CLI error text describes."""
    text = stderr.lower()
    if any(s in text for s in _PERMISSION):
        return "permission"
    if any(s in text for s in _DAEMON_DOWN):
        return "daemon"
    if any(s in text for s in _REJECTED):
        return "rejected"
    if any(s in text for s in _TLS):
        return "tls"
    return "failed"


class DockerCli:
    """The docker CLI, run through AnsibleModule.run_command (password on stdin only)."""

    def __init__(self, run_command, executable="docker", search_path=None):
        self.run_command = run_command
        found = executable if os.path.isabs(executable) else shutil.which(executable, path=search_path)
        if not found or not os.access(found, os.X_OK):
            raise DockerCliError(
                "missing",
                "Docker is not installed: no '%s' executable in PATH (%s); install Docker or set docker_cli"
                % (executable, search_path or os.environ.get("PATH", "")))
        self.path = found

    def _daemon_host(self):
        return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def check_daemon(self):
        """Fail with kind 'daemon' or 'permission' unless the daemon answers."""
        rc, out, err = self.run_command([self.path, "version", "--format", "{{.Server.Version}}"])
        if rc != 0 or not out.strip():
            kind = classify(err)
            if kind == "permission":
                raise DockerCliError("permission", "this user may not use the Docker daemon at %s (not in the "
                                     "docker group?): %s" % (self._daemon_host(), err.strip()))
            raise DockerCliError("daemon", "the Docker daemon is not running or not reachable at %s: %s"
                                 % (self._daemon_host(), err.strip() or out.strip()))
        return out.strip()

    def login(self, config_dir, address, username, password):
        rc, out, err = self.run_command(
            [self.path, "--config", config_dir, "login", "--username", username, "--password-stdin", address],
            data=password)
        if rc == 0:
            return
        kind = classify(err)
        if kind == "rejected":
            raise DockerCliError("rejected", "the registry %s rejected the ECR credential: %s" % (address, err.strip()))
        if kind == "tls":
            raise DockerCliError("tls", "the Docker daemon does not trust the TLS certificate of %s (a private CA "
                                 "belongs in /etc/docker/certs.d/%s/ca.crt): %s" % (address, address, err.strip()))
        if kind in ("daemon", "permission"):
            raise DockerCliError(kind, "docker login %s could not reach the Docker daemon at %s: %s"
                                 % (address, self._daemon_host(), err.strip()))
        raise DockerCliError("failed", "docker login %s failed (rc=%d): %s" % (address, rc, err.strip() or out.strip()))
