"""site.yml refuses on the controller what it can check there (a repository URL, its version, the image in
its registry) before anything is created; it fails with a clear message when a step after provisioning
fails, and the instance ends stopped.

Each test runs the whole site.yml against the stand-in (AWS emulator, loopback registry, instance
container) with one fault put in, then asks the emulator for the run's resources.
"""
from __future__ import annotations

import subprocess
import sys

import boto3
import pytest

from site_helpers import REPO, instance_states, run_site

sys.path.insert(0, str(REPO / "tests" / "standin"))
import instances  # noqa: E402  (tests/standin is plumbing, not a package)
import registry  # noqa: E402


def _assert_failed_and_stopped(result, run_name: str, *expected: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    # The last play fails the run with the recorded step and reason.
    failure = out[out.rfind("Fail the run with the recorded failure"):]
    # The YAML callback folds long messages: compare with the line breaks taken out.
    flat = " ".join(failure.split())
    for text in expected:
        assert text in flat, failure[-3000:]
    assert "outcome: failed" in out
    states = instance_states(run_name)
    assert states and all(state == "stopped" for state in states), states


def _everything():
    """What a run creates (instances, key pairs, security groups, roles), account-wide."""
    ec2, iam = boto3.client("ec2", region_name="us-east-1"), boto3.client("iam", region_name="us-east-1")
    return {
        "instances": sorted(i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]),
        "key_pairs": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
        "security_groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
    }


@pytest.fixture(scope="module")
def tagged_repo(tmp_path_factory):
    """A bare repository with one commit, tagged v1.0.0, reachable as a file:// URL from the controller."""
    work = tmp_path_factory.mktemp("repo")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(work / "src")]
    subprocess.run(["git", "init", "-q", str(work / "src")], check=True)
    (work / "src" / "train.py").write_text("print('never run')\n")
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    subprocess.run([*git, "tag", "v1.0.0"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work / "src"), str(work / "repo.git")], check=True)
    return f"file://{work / 'repo.git'}"


# Found by the controller before anything is created: each costs seconds, not a launch and a pull.
REFUSED = {
    "repository-missing": ({"train_repo": "file:///nonexistent/cloudtrain-training.git", "train_version": "v1.0.0"},
                           ["train_repo file:///nonexistent/cloudtrain-training.git is not a git repository the controller can find",
                            "does not appear to be a git repository"]),
    "version-missing": ({"train_repo": "{repo}", "train_version": "v9.9.9"},
                        ["train_version v9.9.9 does not exist in train_repo file://", "(no branch or tag of that name)"]),
    "image-missing": ({"train_image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:0.0.0-does-not-exist"},
                      ["train_image: 763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:0.0.0-does-not-exist "
                       "does not exist: repository pytorch-training of 763104351884.dkr.ecr.us-east-1.amazonaws.com has no "
                       "image 0.0.0-does-not-exist"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_before_anything_is_created(aws, standin, tmp_path, tagged_repo, case):
    change, expected = REFUSED[case]
    change = {k: v.format(repo=tagged_repo) for k, v in change.items()}
    before = _everything()
    result = run_site(standin, "refused-" + case, tmp_path, **change)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    flat = " ".join(out.split())
    for text in expected:
        assert text in flat, out[-3000:]
    assert "Launch or find the instance" not in out
    assert _everything() == before


def test_training_exits_non_zero(aws, standin, tmp_path):
    # No data and --no-download: the trainer stops with its "bad input" exit code 2.
    result = run_site(standin, "fail-train", tmp_path, data_src="", train_args=["--no-download", "--limit-train", "100"])
    artifacts = tmp_path / "artifacts" / "fail-train"
    # The log comes home, and the failure says where.
    _assert_failed_and_stopped(result, "fail-train", "exited with code 2", "last log lines",
                               f"what came home (log and outputs): {artifacts}")
    assert (artifacts / "train.log").stat().st_size > 0


def test_gpu_type_without_a_gpu(aws, standin, tmp_path):
    # The emulator launches a g4dn.xlarge from the Deep Learning AMI's parameter; its container has no GPU.
    result = run_site(standin, "fail-no-gpu", tmp_path, instance_type="g4dn.xlarge")
    _assert_failed_and_stopped(result, "fail-no-gpu", "should have an NVIDIA GPU, but none is visible")


REFUSING_HOST = "111111111111.dkr.ecr.us-east-1.amazonaws.com"
REFUSING_IP = "127.0.0.3"


@pytest.fixture
def refusing_registry(tmp_path):
    """A second ECR stand-in whose password is not the one ECR hands out, known to new instances
    through the stand-in's hosts file (as a VPC's DNS would name it)."""
    registry.start("ct-site-refuse", listen=f"{REFUSING_IP}:443", user="AWS", password="not-the-ecr-token",
                   dns_names=[REFUSING_HOST], state_dir=tmp_path / "registry")
    hosts = instances.HOSTS_FILE
    before = hosts.read_text() if hosts.exists() else None
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text((before or "") + f"{REFUSING_IP} {REFUSING_HOST}\n")
    yield REFUSING_HOST
    if before is None:
        hosts.unlink(missing_ok=True)
    else:
        hosts.write_text(before)
    registry.stop("ct-site-refuse", state_dir=tmp_path / "registry", purge=True)


def test_registry_refuses_login(aws, standin, tmp_path, refusing_registry):
    result = run_site(standin, "fail-login", tmp_path, train_image=f"{refusing_registry}/pytorch:2.13.0-cpu-amzn2023")
    _assert_failed_and_stopped(result, "fail-login", "rejected the ECR credential", "401 Unauthorized")


def test_instance_unreachable(aws, standin, tmp_path):
    # SSH never answers: provisioning fails after its wait, and the teardown still stops the instance.
    result = run_site(standin, "fail-unreachable", tmp_path, provision_host_vars={"ansible_host": "127.0.0.9"},
                      provision_connection_timeout=10)
    _assert_failed_and_stopped(result, "fail-unreachable", "Wait until SSH answers on every instance")
