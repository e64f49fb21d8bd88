"""The stand-in's plumbing: image tags follow their inputs, vars agree with the scenarios, and an
instance launched in the emulator lives and dies with it (SSH, user data, metadata, stop, start,
poweroff, interruption, terminate)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
STANDIN = REPO / "tests" / "standin"
sys.path.insert(0, str(STANDIN))

import emulator  # noqa: E402
import golden  # noqa: E402
import images  # noqa: E402
import instances  # noqa: E402
import standin  # noqa: E402


def test_tags_follow_the_recipes(tmp_path, monkeypatch):
    recipes = tmp_path / "images"
    shutil.copytree(images.RECIPES, recipes)
    monkeypatch.setattr(images, "RECIPES", recipes)
    before = images.tags()
    assert images.tags() == before  # stable: a warm machine finds the same images

    training = recipes / "training.sh"
    training.write_text(training.read_text() + "\n# changed\n")
    after = images.tags()
    assert after["training"] != before["training"]
    assert after["base"] == before["base"] and after["instance"] == before["instance"]

    # The instance image's build context counts too, and the golden AMI's image is built on it.
    (recipes / "instance" / "cloud-init.py").write_text("# changed\n")
    changed = images.tags()
    assert changed["instance"] != after["instance"] and changed["dlami"] != after["dlami"]
    dlami = recipes / "dlami.Dockerfile"
    dlami.write_text(dlami.read_text() + "\n# changed\n")
    assert images.tags()["dlami"] != changed["dlami"] and images.tags()["instance"] == changed["instance"]

    (recipes / "nodoc.dpkg.cfg").write_text("path-exclude /usr/share/doc/*\n")
    rebased = images.tags()
    # A new base changes every image built on it.
    assert all(rebased[name] != after[name] for name in ("base", "training", "instance", "dlami"))


def test_host_apt_files_skip_disabled_sources(tmp_path, monkeypatch):
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n")
    (sources / "vendor.list.disabled-by-farm").write_text("deb https://vendor.example/apt stable main\n")
    monkeypatch.setattr(images, "APT_SOURCES_DIR", sources)
    monkeypatch.setattr(images, "APT_EXTRA", [tmp_path / "absent"])
    files = images._host_apt_files()
    assert list(files) == [str(sources / "debian.sources")]
    assert images._mirror(files) == "http://mirror.example/debian"
    one_line = {"/etc/apt/sources.list": b"deb [trusted=yes] http://other.example/debian bookworm main\n"}
    assert images._mirror(one_line) == "http://other.example/debian"


def _render(template: str, instance_id: str) -> str:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    # A vars file's strings are trusted templates, as -e @vars.yml makes them.
    templar = Templar(loader=DataLoader(), variables={"item": {"instance_id": instance_id}})
    return templar.template(trust_as_template(template))


def test_address_formula_agrees_in_python_and_jinja():
    for instance_id in ("i-0123456789abcdef0", "i-a8915d6b575d449eb", "i-ffffffffffffffff0", "i-00000000000000000"):
        address = instances.address(instance_id)
        first = int(address.split(".")[1])
        assert address.startswith("127.") and 100 <= first <= 199, address
        assert _render(instances.ADDRESS_JINJA, instance_id) == address


def test_vars_match_the_scenarios():
    play = standin.play_vars(standin.default_training_refs())
    assert play["provision_host_vars"]["ansible_host"] == instances.ADDRESS_JINJA
    assert play["standin_training_image"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/" + standin.default_training_refs()[0])
    docker = yaml.safe_load((REPO / "extensions/molecule/docker/molecule.yml").read_text())
    host_vars = docker["provisioner"]["inventory"]["host_vars"]["ct-standin-docker-role"]
    # The scenarios repeat the nested daemon options and the host variables: they must not drift apart.
    assert host_vars["docker_daemon_options"] == play["docker_daemon_options"]
    site = yaml.safe_load((REPO / "extensions/molecule/default/molecule.yml").read_text())
    group = site["provisioner"]["inventory"]["group_vars"]["all"]
    assert group["provision_host_vars"] == play["provision_host_vars"]
    assert group["docker_daemon_options"] == play["docker_daemon_options"]


# --------------------------------------------------------------------------- a live instance

@pytest.fixture(scope="module")
def fleet():
    """The emulator and the instances' reconciler (`standin.py up`, no registry needed)."""
    if shutil.which(standin.DOCKER) is None or subprocess.run(
            [standin.DOCKER, "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no Docker daemon")
    standin.main(["up", "--only", "emulator,instances"])
    return instances.clients()


@pytest.fixture
def launched(fleet, tmp_path):
    """One instance with a key pair, an instance profile and a user data script; terminated after."""
    ami = fleet["ssm"].get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
    yield from launch(fleet, tmp_path, ami)


def launch(fleet, tmp_path, ami):
    ec2, iam = fleet["ec2"], fleet["iam"]
    name = f"ct-pytest-standin-{uuid.uuid4().hex[:8]}"
    key = ec2.create_key_pair(KeyName=name, KeyType="ed25519")
    key_file = tmp_path / "key.pem"
    key_file.write_text(key["KeyMaterial"])
    key_file.chmod(0o600)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ec2.amazonaws.com"}}]}))
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    run = ec2.run_instances(
        ImageId=ami, InstanceType="m7i.large", MinCount=1, MaxCount=1, KeyName=name,
        IamInstanceProfile={"Name": name}, InstanceInitiatedShutdownBehavior="stop",
        UserData="#!/bin/sh\necho \"user data ran as $(id -un)\" >> /var/tmp/user-data.txt\n",
        MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 2, "HttpEndpoint": "enabled"})
    instance_id = run["Instances"][0]["InstanceId"]
    yield instance_id, key_file
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_for(lambda: container_state(instance_id) == "absent")
    iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name)
    iam.delete_instance_profile(InstanceProfileName=name)
    iam.delete_role(RoleName=name)
    ec2.delete_key_pair(KeyName=name)


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f}s: {check}")


def container_state(instance_id: str) -> str:
    return instances.containers().get(instance_id, "absent")


def emulator_state(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def ssh(instance_id: str, key_file: Path, command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(key_file), "-p", str(instances.SSH_PORT), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
         f"ec2-user@{instances.address(instance_id)}", command],
        capture_output=True, text=True, check=check, timeout=60)


def ssh_ready(instance_id: str, key_file: Path) -> bool:
    return ssh(instance_id, key_file, "true", check=False).returncode == 0


def imds(instance_id: str, path: str, token: str | None) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    url = f"http://{instances.address(instance_id)}:{instances.IMDS_PORT}/latest/{path}"
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def imds_token(instance_id: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://{instances.address(instance_id)}:{instances.IMDS_PORT}/latest/api/token",
                                 method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    with opener.open(req, timeout=5) as resp:
        return resp.read().decode()


def test_an_instance_lives_and_dies_with_the_emulator(fleet, launched):
    ec2 = fleet["ec2"]
    instance_id, key_file = launched
    wait_for(lambda: ssh_ready(instance_id, key_file))
    # SSH as ec2-user with the key pair's private half, root through sudo, the user data ran at boot.
    out = ssh(instance_id, key_file, "id -un; sudo -n id -un; cat /var/tmp/user-data.txt").stdout.split("\n")
    assert out[:3] == ["ec2-user", "root", "user data ran as root"]

    # IMDSv2: no token, no answer; with one, the instance's own facts and its role's credentials.
    assert imds(instance_id, "meta-data/instance-id", None)[0] == 401
    token = imds_token(instance_id)
    assert imds(instance_id, "meta-data/instance-id", token) == (200, instance_id)
    assert imds(instance_id, "meta-data/instance-type", token) == (200, "m7i.large")
    role = imds(instance_id, "meta-data/iam/security-credentials/", token)[1]
    creds = json.loads(imds(instance_id, f"meta-data/iam/security-credentials/{role}", token)[1])
    assert creds["Code"] == "Success" and creds["AccessKeyId"] and creds["Token"]
    assert imds(instance_id, "meta-data/spot/instance-action", token)[0] == 404

    # AWS from the instance: a current boto3, the profile's credentials from the metadata service,
    # the emulator through the standard endpoint variable, as root too.
    probe = ("python3 -c 'import boto3; print(boto3.__version__); "
             "print(boto3.client(\"sts\", region_name=\"us-east-1\").get_caller_identity()[\"Arn\"])'")
    version, arn = ssh(instance_id, key_file, f"sudo -n {probe}").stdout.split()
    assert tuple(int(p) for p in version.split(".")[:2]) >= (1, 28)  # AWS_ENDPOINT_URL support
    assert arn.endswith(f":assumed-role/{role}/{instance_id}")

    # Stopped in the emulator: the container stops; started: the same container, its disk kept.
    ssh(instance_id, key_file, "echo kept > /home/ec2-user/disk.txt")
    ec2.stop_instances(InstanceIds=[instance_id])
    wait_for(lambda: container_state(instance_id) == "exited")
    ec2.start_instances(InstanceIds=[instance_id])
    wait_for(lambda: ssh_ready(instance_id, key_file))
    assert ssh(instance_id, key_file, "cat /home/ec2-user/disk.txt").stdout == "kept\n"
    # User data runs at first boot only.
    assert ssh(instance_id, key_file, "cat /var/tmp/user-data.txt").stdout == "user data ran as root\n"

    # A poweroff inside stops the instance in the emulator (shutdown behaviour: stop).
    ssh(instance_id, key_file, "sudo systemctl poweroff", check=False)
    wait_for(lambda: emulator_state(ec2, instance_id) == "stopped")
    assert container_state(instance_id) == "exited"

    # The status command lists it.
    rows = {row["instance_id"]: row for row in standin.fleet_status()}
    assert rows[instance_id]["emulator"] == "stopped" and rows[instance_id]["container"] == "exited"


def test_interrupt_posts_the_notice_then_terminates(fleet, launched):
    ec2 = fleet["ec2"]
    instance_id, key_file = launched
    wait_for(lambda: ssh_ready(instance_id, key_file))
    assert standin.main(["interrupt", instance_id, "--notice", "4"]) == 0
    notice = json.loads(imds(instance_id, "meta-data/spot/instance-action", imds_token(instance_id))[1])
    assert notice["action"] == "terminate" and notice["time"].endswith("Z")
    assert emulator_state(ec2, instance_id) == "running"
    wait_for(lambda: emulator_state(ec2, instance_id) == "terminated", timeout=20)
    wait_for(lambda: container_state(instance_id) == "absent")


# --------------------------------------------------------------------------- the golden AMI

@pytest.fixture(scope="module")
def golden_fleet(fleet):
    """The whole stand-in (`standin.py up`): the registry, and the golden AMI's seed pulled from it."""
    standin.main(["up"])
    return fleet


@pytest.fixture
def launched_golden(golden_fleet, tmp_path):
    yield from launch(golden_fleet, tmp_path, emulator.GOLDEN_AMI_ID)


def test_a_golden_ami_instance_has_docker_and_its_own_copy_of_the_pulled_image(golden_fleet, launched_golden):
    instance_id, key_file = launched_golden
    image = standin.play_vars(standin.default_training_refs())["standin_training_image"]
    # The AMI as the collection sees it: x86_64, logged in to as ec2-user.
    found = golden_fleet["ec2"].describe_images(ImageIds=[emulator.GOLDEN_AMI_ID])["Images"][0]
    assert found["Name"] == emulator.GOLDEN_AMI_NAME and found["Architecture"] == "x86_64"
    wait_for(lambda: ssh_ready(instance_id, key_file), timeout=120)
    assert ssh(instance_id, key_file, "id -un").stdout == "ec2-user\n"
    # Docker runs at boot and already holds the training image under its ECR name, with the
    # digest the registry serves: what the train role's pull would have left.
    wait_for(lambda: ssh(instance_id, key_file, "sudo -n docker info", check=False).returncode == 0)
    digests = json.loads(ssh(instance_id, key_file,
                             f"sudo -n docker image inspect --format '{{{{json .RepoDigests}}}}' {image}").stdout)
    pushed = json.loads(subprocess.run([standin.DOCKER, "image", "inspect", "--format", "{{json .RepoDigests}}",
                                        images.tags()["training"]], capture_output=True, text=True,
                                       check=True).stdout)
    assert {d.split("@")[1] for d in digests} & {d.split("@")[1] for d in pushed}, (digests, pushed)
    # Its own copy: removing the image on the instance leaves the seed whole.
    ssh(instance_id, key_file, f"sudo -n docker image rm {image}")
    seed = golden.seed_name(images.tags()["dlami"], images.tags()["training"], standin.default_training_refs())
    assert golden.complete(seed)
    repositories = golden.mountpoint(seed) / "docker" / "image" / "overlay2" / "repositories.json"
    assert image.rsplit(":", 1)[0] in json.loads(repositories.read_text())["Repositories"]
