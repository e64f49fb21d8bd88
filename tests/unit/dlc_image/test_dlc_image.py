"""The Deep Learning Containers resolver against the reference data it was generated from."""
from __future__ import annotations

import csv
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.cloudtrain.ec2.plugins.module_utils import _dlc_images as dlc
from ansible_collections.cloudtrain.ec2.plugins.module_utils._dlc_data import IMAGES, REGION_ACCOUNTS

REPO = Path(__file__).resolve().parents[3]
REFERENCE = REPO.parent / "shared" / "reference" / "dlc"

BLOG_CPU = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.4.0-cpu-py311-ubuntu22.04-ec2"
BLOG_GPU = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.4.0-gpu-py311-cu124-ubuntu22.04-ec2"

CLASSIC_TAG = re.compile(r"^\d+\.\d+\.\d+-(cpu|gpu)-py3\d+(-cu\d{3})?-ubuntu\d+\.\d+-ec2$")
AL2023_TAG = re.compile(r"^\d+\.\d+\.\d+-(cpu|cu\d{3})-amzn2023$")


def _reference_regions():
    with open(REFERENCE / "region_accounts.csv", newline="") as handle:
        return [(row["region"], row["account_id"]) for row in csv.DictReader(handle)]


def _reference_images():
    return list(_reference_image_params())


def _reference_image_params():
    for path in sorted(REFERENCE.glob("*/*.yml")):
        doc = yaml.safe_load(path.read_text())
        repository = "pytorch" if path.parent.name == "pytorch" else path.name.split("__", 1)[0]
        yield pytest.param(repository, doc, id=f"{path.parent.name}/{path.name}")


def test_shipped_data_is_generated_from_the_reference():
    proc = subprocess.run([sys.executable, str(REPO / "hacking" / "generate_dlc_data.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("region,account", _reference_regions())
def test_every_region_resolves_to_its_account(region, account):
    image = dlc.resolve(accelerator="gpu", region=region)
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    assert image["registry"] == f"{account}.dkr.ecr.{region}.{suffix}"
    assert image["registry_id"] == account
    assert image["uri"].startswith(f"{account}.dkr.ecr.{region}.{suffix}/")


def test_region_table_is_complete_and_china_has_its_own_domain():
    assert dict(_reference_regions()) == REGION_ACCOUNTS
    assert dlc.resolve(accelerator="cpu", region="cn-northwest-1")["uri"].startswith(
        "727897471807.dkr.ecr.cn-northwest-1.amazonaws.com.cn/")


@pytest.mark.parametrize("repository,doc", _reference_images())
def test_every_reference_image_is_found_by_its_facts(repository, doc):
    full_version = doc["tags"][0].split("-", 1)[0]
    image = dlc.resolve(
        framework_version=full_version, accelerator=doc["accelerator"], python_version=doc.get("python"),
        cuda_version=doc.get("cuda"), os_name=doc["os"], repository=repository, region="us-west-2",
        today=datetime.date(2026, 1, 1),
    )
    assert image["uri"] == f"763104351884.dkr.ecr.us-west-2.amazonaws.com/{repository}:{doc['tags'][0]}"
    # The series ("2.6") finds the same image as the release ("2.6.0").
    assert dlc.resolve(framework_version=str(doc["version"]), accelerator=doc["accelerator"],
                       repository=repository, region="us-west-2")["tag"] == doc["tags"][0]


def test_both_naming_schemes():
    classic = [i for i in IMAGES if i["repository"].startswith("pytorch-training")]
    al2023 = [i for i in IMAGES if i["repository"] == "pytorch"]
    assert classic and al2023
    assert all(CLASSIC_TAG.match(i["tags"][0]) for i in classic), [i["tags"][0] for i in classic]
    assert all(AL2023_TAG.match(i["tags"][0]) for i in al2023), [i["tags"][0] for i in al2023]
    gpu = dlc.resolve(framework_version="2.13", accelerator="gpu", region="us-east-1")
    assert gpu["uri"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch:2.13.0-cu133-amzn2023"
    cpu = dlc.resolve(framework_version="2.6", accelerator="cpu", region="us-east-1")
    assert cpu["uri"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-cpu-py312-ubuntu22.04-ec2"


def test_the_blog_images_exactly():
    assert dlc.resolve("2.4.0", accelerator="cpu", region="us-east-1")["uri"] == BLOG_CPU
    assert dlc.resolve("2.4.0", accelerator="gpu", region="us-east-1")["uri"] == BLOG_GPU
    # The same, said the blog's way: Python 3.11, CUDA 12.4, an instance type.
    assert dlc.resolve("2.4", instance_type="g4dn.xlarge", python_version="3.11", cuda_version="12.4",
                       region="us-east-1")["uri"] == BLOG_GPU
    assert dlc.resolve("2.4", instance_type="c5.xlarge", python_version="py311",
                       region="us-east-1")["uri"] == BLOG_CPU
    assert dlc.resolve("2.4.0", accelerator="gpu", region="us-east-1")["past_end_of_support"] is True


def _newest_reference_version(accelerator, architecture="x86_64", today=None):
    """The newest version in the reference files for accelerator/architecture, supported on today if given."""
    versions = []
    for path in REFERENCE.glob("*/*.yml"):
        doc = yaml.safe_load(path.read_text())
        if doc["accelerator"] == accelerator and ("arm64" in path.name) == (architecture == "arm64"):
            if today is None or today.isoformat() <= doc["eop"]:
                versions.append(tuple(int(p) for p in doc["tags"][0].split("-")[0].split(".")))
    return ".".join(str(n) for n in max(versions)) if versions else None


@pytest.mark.parametrize("accelerator", ["cpu", "gpu"])
def test_default_is_the_newest_supported_version(accelerator):
    today = datetime.date(2026, 12, 1)
    image = dlc.resolve(accelerator=accelerator, region="us-east-1", today=today)
    assert image["version"] == _newest_reference_version(accelerator, today=today)
    assert image["past_end_of_support"] is False
    # The role's call: no version, no Python, no repository (empty strings count as not given).
    assert dlc.resolve(framework_version="", accelerator=accelerator, python_version="", repository="",
                       region="us-east-1", today=today)["uri"] == image["uri"]


def test_default_reads_the_clock():
    today = datetime.date.today()
    newest = _newest_reference_version("gpu", today=today) or _newest_reference_version("gpu")
    assert dlc.resolve(accelerator="gpu", region="us-east-1")["version"] == newest


def test_only_unsupported_matches_give_the_newest_of_them_flagged():
    image = dlc.resolve(accelerator="gpu", python_version="3.11", region="us-east-1", today=datetime.date(2026, 12, 1))
    assert image["uri"] == BLOG_GPU and image["past_end_of_support"] is True
    # Once every image is past its end of patching, the newest one is still named (and flagged).
    late = dlc.resolve(accelerator="gpu", region="us-east-1", today=datetime.date(2030, 1, 1))
    assert late["version"] == _newest_reference_version("gpu") and late["past_end_of_support"] is True


def test_instance_type_decides_accelerator_and_architecture():
    assert dlc.resolve(instance_type="g4dn.xlarge", region="us-east-1")["accelerator"] == "gpu"
    assert dlc.resolve(instance_type="m7i.large", region="us-east-1")["accelerator"] == "cpu"
    # g4ad has AMD GPUs: a CUDA image would not run, so it counts as cpu.
    assert dlc.resolve(instance_type="g4ad.xlarge", region="us-east-1")["accelerator"] == "cpu"


@pytest.mark.parametrize("instance_type", ["g5g.xlarge", "g5g.16xlarge", "p6e-gb200.36xlarge"])
def test_arm64_gpu_types_get_the_arm64_image(instance_type):
    image = dlc.resolve(instance_type=instance_type, region="us-east-1", today=datetime.date(2026, 12, 1))
    assert image["repository"] == "pytorch-training-arm64" and image["architecture"] == "arm64"
    assert image["uri"] == ("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training-arm64:"
                            "2.7.0-gpu-py312-cu128-ubuntu22.04-ec2")
    assert image["past_end_of_support"] is True  # the only arm64 image; eop 2026-04-23


@pytest.mark.parametrize("instance_type", ["m7g.large", "c6gn.xlarge", "t4g.micro"])
def test_a_type_without_an_image_is_refused_with_what_would_work(instance_type):
    with pytest.raises(dlc.DLCError) as err:
        dlc.resolve(instance_type=instance_type, region="us-east-1")
    text = str(err.value)
    assert text.startswith(f"no Deep Learning Containers PyTorch training image runs on {instance_type} (cpu, arm64)")
    assert "arm64 NVIDIA GPU types (g5g, p6e-gb200)" in text and "g4dn" in text and "x86_64 CPU types (m7i" in text


def test_details_name_account_region_repository_tag_and_version():
    image = dlc.resolve(instance_type="g4dn.xlarge", region="eu-central-2", today=datetime.date(2026, 12, 1))
    assert image["account"] == image["registry_id"] == "380420809688"
    assert image["region"] == "eu-central-2"
    assert image["uri"] == f"{image['registry']}/{image['repository']}:{image['tag']}"
    assert image["uri"].startswith("380420809688.dkr.ecr.eu-central-2.amazonaws.com/")
    assert image["tag"].startswith(image["version"] + "-")


def test_public_registry_needs_no_region_or_login():
    image = dlc.resolve("2.6.0", accelerator="gpu", registry="public")
    assert image["uri"] == "public.ecr.aws/deep-learning-containers/pytorch-training:2.6.0-gpu-py312-cu126-ubuntu22.04-ec2"
    assert image["login_required"] is False and image["registry_id"] is None and image["account"] is None


def test_end_of_support_follows_the_clock():
    image = dlc.resolve("2.6", accelerator="gpu", region="us-east-1", today=datetime.date(2026, 1, 28))
    assert image["past_end_of_support"] is False
    image = dlc.resolve("2.6", accelerator="gpu", region="us-east-1", today=datetime.date(2026, 1, 30))
    assert image["past_end_of_support"] is True


def test_unknown_version_lists_the_nearest_valid_images():
    with pytest.raises(dlc.DLCError) as err:
        dlc.resolve("2.5", accelerator="gpu", region="us-east-1")
    text = str(err.value)
    assert "no Deep Learning Containers image matches framework_version=2.5" in text
    # Nearest: the neighbouring GPU versions, not a CPU image of another series.
    assert "pytorch-training:2.4.0-gpu-py311-cu124-ubuntu22.04-ec2" in text
    assert "pytorch-training:2.6.0-gpu-py312-cu126-ubuntu22.04-ec2" in text


def test_impossible_combination_names_valid_ones():
    with pytest.raises(dlc.DLCError) as err:
        dlc.resolve("2.13", accelerator="gpu", cuda_version="12.4", region="us-east-1")
    assert "pytorch:2.13.0-cu133-amzn2023" in str(err.value)


@pytest.mark.parametrize("kwargs,message", [
    (dict(accelerator="cpu", cuda_version="12.4", region="us-east-1"), "cuda_version 12.4 was given for a cpu image"),
    (dict(accelerator="gpu", region="xx-nowhere-1"), "no Deep Learning Containers registry is known for region 'xx-nowhere-1'"),
    (dict(accelerator="gpu"), "region is required for the private (ECR) registry"),
    (dict(accelerator="cpu", instance_type="p4d.24xlarge", region="us-east-1"), "contradicts instance_type p4d.24xlarge"),
    (dict(accelerator="tpu", region="us-east-1"), "accelerator must be cpu or gpu"),
    (dict(accelerator="gpu", python_version="three", region="us-east-1"), "is not a Python version"),
    (dict(accelerator="gpu", cuda_version="12", region="us-east-1"), "is not a CUDA version"),
    (dict(instance_type="bogus", region="us-east-1"), "is not an EC2 instance type"),
    (dict(accelerator="gpu", repository="tensorflow-training", region="us-east-1"), "repository must be one of"),
])
def test_bad_requests_say_why(kwargs, message):
    with pytest.raises(dlc.DLCError) as err:
        dlc.resolve(**kwargs)
    assert message in str(err.value)


def test_lookup_plugin_through_ansible(tmp_path):
    """The lookup as a playbook sees it: the URI, the details for g5g (with a warning), then a failure."""
    playbook = tmp_path / "dlc.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"URI={{ lookup('cloudtrain.ec2.dlc_image', '2.4.0', instance_type='g4dn.xlarge', region='us-east-1') }}\"\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"ARM={{ lookup('cloudtrain.ec2.dlc_image', instance_type='g5g.xlarge', region='eu-west-1',"
        " details=true).repository }}\"\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"{{ lookup('cloudtrain.ec2.dlc_image', '2.5', accelerator='gpu', region='us-east-1') }}\"\n"
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), str(playbook)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    out = proc.stdout + proc.stderr
    assert f"URI={BLOG_GPU}" in out
    assert "ARM=pytorch-training-arm64" in out and "is past its end of support" in out
    assert proc.returncode == 2, out
    assert "nearest valid images" in out and "2.6.0-gpu-py312-cu126-ubuntu22.04-ec2" in out


@pytest.mark.parametrize("uri, account, region, login", [
    (BLOG_GPU, "763104351884", "us-east-1", True),
    ("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-training:2.4.0-cpu-py311-ubuntu22.04-ec2",
     "727897471807", "cn-north-1", True),
    ("public.ecr.aws/deep-learning-containers/pytorch-training:2.4.0-cpu-py311-ubuntu22.04-ec2", None, None, False),
    ("ghcr.io/me/trainer@sha256:" + "0" * 64, None, None, False),
])
def test_a_given_image_is_described_not_resolved(uri, account, region, login):
    facts = dlc.describe_reference(uri)
    assert (facts["uri"], facts["account"], facts["registry_id"], facts["region"], facts["login_required"]) == (
        uri, account, account, region, login)
    # The same keys as a resolved image: the train role reads either without knowing which.
    resolved = dlc.resolve(framework_version="2.4.0", accelerator="gpu", region="us-east-1")
    assert set(facts) <= set(resolved)
