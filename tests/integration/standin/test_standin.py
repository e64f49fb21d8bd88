"""The stand-in's plumbing: image tags follow their inputs, vars agree with the docker scenario,
and an instance container boots systemd with the "instance profile" environment."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
STANDIN = REPO / "tests" / "standin"
sys.path.insert(0, str(STANDIN))

import images  # noqa: E402
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

    (recipes / "nodoc.dpkg.cfg").write_text("path-exclude /usr/share/doc/*\n")
    rebased = images.tags()
    # A new base changes every image built on it.
    assert all(rebased[name] != after[name] for name in ("base", "training", "instance"))


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


def test_vars_match_the_docker_scenario():
    play = standin.play_vars("ct-standin-instance", standin.default_training_refs())
    assert play["provision_host_vars"] == {
        "ansible_connection": "community.docker.docker",
        "ansible_host": "ct-standin-instance",
        "ansible_user": "ec2-user",
    }
    # Pushed where the train role's default image resolution looks for a CPU instance's image.
    assert play["standin_training_image"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/" + standin.default_training_refs()[0])
    scenario = yaml.safe_load((REPO / "extensions/molecule/docker/molecule.yml").read_text())
    host_vars = scenario["provisioner"]["inventory"]["host_vars"]["ct-standin-docker-role"]
    # The scenario repeats the nested daemon options: they must not drift apart.
    assert host_vars["docker_daemon_options"] == play["docker_daemon_options"]


@pytest.fixture
def instance():
    if shutil.which(standin.DOCKER) is None:
        pytest.skip("no docker CLI")
    name = f"ct-standin-test-{uuid.uuid4().hex[:8]}"
    standin.main(["up", "--only", "instance", "--instance-name", name])
    yield name
    standin.main(["down", "--only", "instance", "--instance-name", name])
    assert standin._inspect(name) is None


def _exec(name: str, *argv: str, user: str = "root") -> str:
    return subprocess.run([standin.DOCKER, "exec", "-u", user, name, *argv], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_instance_boots_like_an_ec2_instance(instance):
    assert _exec(instance, "systemctl", "is-system-running") in ("running", "degraded")
    # The login user has passwordless sudo, and sudo keeps the "instance profile" environment.
    assert _exec(instance, "sudo", "-n", "printenv", "AWS_ENDPOINT_URL", user="ec2-user") == standin.emulator.URL
    assert _exec(instance, "printenv", "AWS_DEFAULT_REGION", user="ec2-user") == "us-east-1"
    # The DLC registry name resolves to loopback; Docker is not installed yet (the role does it).
    assert _exec(instance, "getent", "hosts", standin.REGISTRY_HOST).split()[0] == "127.0.0.1"
    assert subprocess.run([standin.DOCKER, "exec", instance, "sh", "-c", "command -v docker"],
                          capture_output=True, check=False).returncode != 0
    # A second `up` reuses the running container instead of replacing it.
    started = json.loads(subprocess.run([standin.DOCKER, "inspect", instance], capture_output=True,
                                        check=True).stdout)[0]["Id"]
    standin.main(["up", "--only", "instance", "--instance-name", instance])
    assert standin._inspect(instance)["Id"] == started
