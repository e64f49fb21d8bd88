"""cloudtrain.ec2.ecr_login end to end: moto's ECR token -> docker login -> authenticated pull over TLS.

The registry is Debian's docker-registry (tests/standin/registry.py) on [::1]:443 with htpasswd
auth. It answers as <account>.dkr.ecr.us-east-1.amazonaws.com, the proxy endpoint moto returns,
through a tagged /etc/hosts line pointing at ::1 (not 127.0.0.0/8, where Docker skips certificate
checks), with its CA in /etc/docker/certs.d/<address>/ca.crt. Every host change is undone at the end.
The module runs through ansible-playbook from the checkout, as a user would run it.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import registry  # tests/standin, put on sys.path by tests/conftest.py

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
REGION = "us-east-1"
# Fictional accounts, so the demo's 763104351884 registry (127.0.0.1:443) is never touched.
TEST_ID = "210987654321"
OTHER_ID = "109876543210"
ADDRESS = f"{TEST_ID}.dkr.ecr.{REGION}.amazonaws.com"
OTHER_ADDRESS = f"{OTHER_ID}.dkr.ecr.{REGION}.amazonaws.com"
# What moto's GetAuthorizationToken hands out for TEST_ID; the registry accepts only this one.
PASSWORD = f"{TEST_ID}-auth-token"
IMAGE = f"{ADDRESS}/ct-ecr-test/tiny:1"
REGISTRY_NAME = "ct-ecr-it"


def _docker(*args, config=None, stdin=None, check=True, env=None):
    cmd = ["docker"] + (["--config", str(config)] if config else []) + list(args)
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, env=env, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def tls_registry(aws_emulator, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: port 443, /etc/hosts and /etc/docker/certs.d")
    if _docker("version", "--format", "{{.Server.Version}}", check=False).returncode != 0:
        pytest.fail("the host Docker daemon does not answer (scripts/host-setup.sh starts it)")
    info = registry.start(REGISTRY_NAME, "[::1]:443", "AWS", PASSWORD, dns_names=[ADDRESS, OTHER_ADDRESS])
    seed = tmp_path_factory.mktemp("seed")
    with contextlib.ExitStack() as undo:
        undo.callback(registry.stop, REGISTRY_NAME, purge=True)
        for name in (ADDRESS, OTHER_ADDRESS):
            undo.enter_context(registry.host_entry(name, "::1"))
            undo.enter_context(registry.docker_trust(name, info["ca_cert"]))
        undo.callback(_docker, "rmi", "-f", IMAGE, check=False)
        # A tiny image (one file, no base image: Docker Hub is out of reach), pushed with a
        # direct login. dockerd may hold /etc/hosts cached for up to 5 s: retry the first login.
        rootfs = seed / "rootfs"
        rootfs.mkdir()
        (rootfs / "hello.txt").write_text("cloudtrain ecr_login test image\n")
        tarball = seed / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        for attempt in range(20):
            login = _docker("login", "--username", "AWS", "--password-stdin", ADDRESS, config=seed, stdin=PASSWORD,
                            check=False)
            if login.returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"seed login failed: {login.stderr}")
        _docker("import", str(tarball), IMAGE)
        _docker("push", IMAGE, config=seed)
        _docker("rmi", IMAGE)
        yield info


def play(tmp_path, args, *, tasks=1, check=False, verbosity=0, env=None, drop_env=(), interpreter=None,
         task_env=None):
    """Run the module through ansible-playbook from the checkout; returns (results, output, rc)."""
    task = {"name": "ecr login", "cloudtrain.ec2.ecr_login": args}
    if task_env:
        task["environment"] = task_env
    playbook = [{"hosts": "localhost", "gather_facts": False, "tasks": [dict(task) for _task in range(tasks)]}]
    if interpreter:
        playbook[0]["vars"] = {"ansible_python_interpreter": interpreter}
    path = tmp_path / f"play-{time.monotonic_ns()}.yml"
    path.write_text(json.dumps(playbook))
    run_env = {k: v for k, v in os.environ.items() if k not in drop_env}
    run_env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    if verbosity == 0:
        run_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    run_env.update(env or {})
    cmd = [str(BIN / "ansible-playbook"), str(path)] + (["--check"] if check else [])
    cmd += ["-" + "v" * verbosity] if verbosity else []
    proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    results = []
    if verbosity == 0:
        data = json.loads(proc.stdout[proc.stdout.index("{"):])
        results = [t["hosts"]["localhost"] for t in data["plays"][0]["tasks"]]
    return results, output, proc.returncode


def _args(tmp_path, **extra):
    return dict(region=REGION, registry_ids=[TEST_ID], docker_config=str(tmp_path / "docker" / "config.json"), **extra)


def _failure(results):
    assert results and results[-1].get("failed"), results
    return results[-1]["msg"]


# ------------------------------------------------------------------ the chain, idempotence, files

def test_token_login_and_authenticated_pull_over_tls(tls_registry, tmp_path):
    results, output, rc = play(tmp_path, _args(tmp_path), tasks=2)
    assert rc == 0, output
    first, second = results
    assert first["changed"] is True
    assert first["registries"] == [{"registry_id": TEST_ID, "registry": ADDRESS, "changed": True,
                                    "expires_at": "2015-01-01T00:00:00+00:00", "source": "ecr"}]
    # moto's token is the same every time and expired in 2015: the same credential is no change.
    assert second["changed"] is False and second["registries"][0]["changed"] is False

    config = tmp_path / "docker" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE((config.parent / "cloudtrain-ecr-login.json").stat().st_mode) == 0o600
    auth = json.loads(config.read_text())["auths"][ADDRESS]["auth"]
    assert base64.b64decode(auth).decode() == f"AWS:{PASSWORD}"

    pulled = _docker("pull", IMAGE, config=config.parent)
    assert "Downloaded newer image" in pulled.stdout or "Image is up to date" in pulled.stdout
    _docker("rmi", IMAGE)
    # The same pull without the login is refused: the registry really checks credentials.
    anonymous = _docker("pull", IMAGE, config=tmp_path / "empty", check=False)
    assert anonymous.returncode != 0 and "no basic auth credentials" in anonymous.stderr


def test_config_method_writes_what_docker_login_writes(tls_registry, tmp_path):
    results, output, rc = play(tmp_path, _args(tmp_path, login_method="config"))
    assert rc == 0 and results[0]["changed"] is True, output
    _docker("pull", IMAGE, config=tmp_path / "docker")
    _docker("rmi", IMAGE)


def test_check_mode_changes_nothing(tls_registry, tmp_path):
    results, output, rc = play(tmp_path, _args(tmp_path), check=True)
    assert rc == 0 and results[0]["changed"] is True, output
    assert not (tmp_path / "docker").exists()


def test_become_style_owner_gets_the_files(tls_registry, tmp_path):
    nobody = pwd.getpwnam("nobody")
    results, output, rc = play(tmp_path, _args(tmp_path, docker_config_owner="nobody"))
    assert rc == 0, output
    for path in (tmp_path / "docker", tmp_path / "docker" / "config.json", tmp_path / "docker" / "cloudtrain-ecr-login.json"):
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), path
    assert stat.S_IMODE((tmp_path / "docker" / "config.json").stat().st_mode) == 0o600


# ------------------------------------------------------------------ secrets

def test_password_never_printed_nor_on_a_command_line(tls_registry, tmp_path):
    argv_log = tmp_path / "docker-argv.log"
    wrapper = tmp_path / "docker-wrapper"
    # Records every command line the module gives docker, then runs the real CLI.
    wrapper.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {argv_log}\nexec {shutil.which('docker')} \"$@\"\n")
    wrapper.chmod(0o755)
    _unused, output, rc = play(tmp_path, _args(tmp_path, docker_cli=str(wrapper), reauthorize=True), verbosity=3)
    assert rc == 0, output
    assert "--password-stdin" in argv_log.read_text()  # the login did go through the CLI
    secrets = [PASSWORD, base64.b64encode(f"AWS:{PASSWORD}".encode()).decode()]
    config_text = (tmp_path / "docker" / "config.json").read_text()
    assert secrets[1] in config_text  # the secret exists, so the greps below can find it
    for secret in secrets:
        assert output.count(secret) == 0, f"secret printed at -vvv: {secret[:4]}..."
        assert secret not in argv_log.read_text()
    assert "ESTABLISH LOCAL CONNECTION" in output and "AnsiballZ_ecr_login.py" in output  # really -vvv


# ------------------------------------------------------------------ failures, for the right reason

def test_tls_without_the_ca_is_refused(tls_registry, tmp_path):
    registry.untrust(ADDRESS)
    try:
        results, output, rc = play(tmp_path, _args(tmp_path))
    finally:
        registry.trust(ADDRESS, tls_registry["ca_cert"])
    assert rc == 2
    msg = _failure(results)
    assert f"the Docker daemon does not trust the TLS certificate of {ADDRESS}" in msg
    assert "x509: certificate signed by unknown authority" in msg


def test_wrong_password_is_rejected_by_the_registry(tls_registry, tmp_path):
    # OTHER_ID's token is not the registry's password: the registry itself says no.
    results, output, rc = play(tmp_path, dict(_args(tmp_path), registry_ids=[OTHER_ID]))
    assert rc == 2
    msg = _failure(results)
    assert f"the registry {OTHER_ADDRESS} rejected the ECR credential" in msg
    assert "401 Unauthorized" in msg
    assert results[-1]["reason"] == "rejected"


def test_daemon_down(tls_registry, tmp_path):
    dead = tmp_path / "dead.sock"
    results, output, rc = play(tmp_path, _args(tmp_path), task_env={"DOCKER_HOST": f"unix://{dead}"})
    assert rc == 2
    msg = _failure(results)
    assert f"the Docker daemon is not running or not reachable at unix://{dead}" in msg
    assert results[-1]["reason"] == "daemon"


def test_docker_not_installed(aws_emulator, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    results, output, rc = play(tmp_path, _args(tmp_path), task_env={"PATH": str(empty)})
    assert rc == 2
    assert _failure(results).startswith(f"Docker is not installed: no 'docker' executable in PATH ({empty})")


def test_no_credentials(aws_emulator, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    results, output, rc = play(tmp_path, _args(tmp_path), env={"HOME": str(home)},
                               drop_env=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                         "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"))
    assert rc == 2
    msg = _failure(results)
    assert msg.startswith("No AWS credentials found for ECR in us-east-1. boto3 looked at, in order:")
    assert f"{home}/.aws/credentials (missing)" in msg
    assert "Traceback" not in output


def test_unknown_region(aws_emulator, tmp_path):
    results, output, rc = play(tmp_path, dict(_args(tmp_path), region="xx-nowhere-1"))
    assert rc == 2
    assert _failure(results).startswith("unknown region 'xx-nowhere-1'")
    assert results[-1]["reason"] == "unknown_region"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def iam_enforcing_emulator():
    """A private moto server that enforces IAM (the shared one must not: others use it)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    # The first 3 requests (create user, key, policy) are let through; every later one is checked.
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _attempt in range(150):
            try:
                opener.open(url + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        import boto3
        iam = boto3.client("iam", endpoint_url=url, region_name=REGION, aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        iam.create_user(UserName="ct-ecr-no-ecr")
        key = iam.create_access_key(UserName="ct-ecr-no-ecr")["AccessKey"]
        iam.put_user_policy(UserName="ct-ecr-no-ecr", PolicyName="s3-only", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}]}))
        yield url, key
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_access_denied_names_the_iam_action(aws_emulator, iam_enforcing_emulator, tmp_path):
    url, key = iam_enforcing_emulator
    results, output, rc = play(tmp_path, _args(tmp_path), drop_env=("AWS_SESSION_TOKEN",), env={
        "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]})
    assert rc == 2
    msg = _failure(results)
    assert msg.startswith("AccessDenied: these AWS credentials may not call ecr:GetAuthorizationToken in us-east-1")
    assert "user/ct-ecr-no-ecr is not authorized to perform: ecr:GetAuthorizationToken" in msg
    assert results[-1]["reason"] == "access_denied"
