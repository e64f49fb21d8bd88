"""The execution environment definitions: ansible-builder writes a build context from the root's
execution-environment.yml, and reads the collection's own needs (meta/execution-environment.yml)
from the built and installed collection, as it does inside an EE build. No image is pulled."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_ansible_builder_creates_the_build_context(tmp_path):
    context = tmp_path / "context"
    subprocess.run([str(BIN / "ansible-builder"), "create", "-f", str(REPO / "execution-environment.yml"),
                    "-c", str(context)], check=True, capture_output=True, text=True, cwd=tmp_path)
    dockerfile = (context / "Dockerfile").read_text()
    assert "ansible-galaxy" in dockerfile or "install-from-bindep" in dockerfile
    assert "boto3>=1.34.0" in (context / "_build" / "requirements.txt").read_text()
    assert "rsync" in (context / "_build" / "bindep.txt").read_text()
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert {c["name"] for c in galaxy["collections"]} >= {"amazon.aws", "community.docker", "ansible.posix"}


def test_ansible_builder_reads_the_installed_collections_needs(tmp_path):
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, cwd=REPO)
    tarball = next(tmp_path.glob("cloudtrain-ec2-*.tar.gz"))
    env = {"PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(tmp_path / "c"),
                    str(tarball)], check=True, capture_output=True, cwd=tmp_path, env=env)
    found = subprocess.run([str(BIN / "ansible-builder"), "introspect", str(tmp_path / "c")],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    data = yaml.safe_load(found.split("---", 1)[1])
    assert "boto3>=1.34.0  # from collection cloudtrain.ec2" in data["python"], found
    assert "rsync  # from collection cloudtrain.ec2" in data["system"], found
