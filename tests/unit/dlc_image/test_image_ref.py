"""Image references as Docker reads them, and ECR registry names (the image_manifest lookup's parsing)."""
from __future__ import annotations

import pytest

from ansible_collections.cloudtrain.ec2.plugins.module_utils import _dlc_images as dlc
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _image_ref as ref
from ansible_collections.cloudtrain.ec2.plugins.module_utils._dlc_data import REGION_ACCOUNTS


@pytest.mark.parametrize("image, registry, repository, reference", [
    ("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311",
     "763104351884.dkr.ecr.us-east-1.amazonaws.com", "pytorch-training", "2.5.1-gpu-py311"),
    ("registry.example.com:5000/team/trainer", "registry.example.com:5000", "team/trainer", "latest"),
    ("localhost/trainer:dev", "localhost", "trainer", "dev"),
    ("python:3.11", "docker.io", "python", "3.11"),
    ("pytorch/pytorch", "docker.io", "pytorch/pytorch", "latest"),
    ("ghcr.io/org/img@sha256:" + "a" * 64, "ghcr.io", "org/img", "sha256:" + "a" * 64),
    ("ghcr.io/org/img:v1@sha256:" + "b" * 64, "ghcr.io", "org/img", "sha256:" + "b" * 64),
])
def test_a_reference_splits_as_docker_reads_it(image, registry, repository, reference):
    assert ref.parse(image) == {"registry": registry, "repository": repository, "reference": reference}


@pytest.mark.parametrize("image", ["", "has space:1", "ghcr.io/", "ghcr.io/org/img:", "ghcr.io/org/:1"])
def test_what_is_not_a_reference_is_refused(image):
    with pytest.raises(ValueError, match="is not an image reference"):
        ref.parse(image)


def test_every_deep_learning_containers_region_is_an_ecr_registry_of_its_account():
    for region, account in REGION_ACCOUNTS.items():
        uri = dlc.resolve(instance_type="m7i.large", region=region)["uri"]
        assert ref.ecr_registry(ref.parse(uri)["registry"]) == (account, region), uri


@pytest.mark.parametrize("registry", ["docker.io", "ghcr.io", "123.dkr.ecr.us-east-1.amazonaws.com",
                                      "763104351884.dkr.ecr.us-east-1.amazonaws.com.evil.example"])
def test_other_registries_are_not_ecr(registry):
    assert ref.ecr_registry(registry) is None
