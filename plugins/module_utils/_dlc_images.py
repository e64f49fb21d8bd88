# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resolve AWS Deep Learning Containers image URIs (the way SageMaker's image_uris.retrieve does).

Pure functions over the shipped facts in _dlc_data: the dlc_image lookup uses them on the
controller, the ecr_login module uses registry_account()/registry_host() on the managed host.
"""
from __future__ import annotations

import datetime
import re

from ansible_collections.cloudtrain.ec2.plugins.module_utils._dlc_data import IMAGES, REGION_ACCOUNTS
from ansible_collections.cloudtrain.ec2.plugins.module_utils.instance_types import (
    instance_accelerator,
    instance_architecture,
    instance_kind_examples,
)

PUBLIC_REGISTRY = "public.ecr.aws/deep-learning-containers"
# The repositories a user may ask for; pytorch-training on arm64 is served as pytorch-training-arm64.
REPOSITORIES = ("pytorch-training", "pytorch", "pytorch-training-arm64")


class DLCError(ValueError):
    """A request that names no image, or a region without a DLC registry."""


def registry_domain(region):
    """ECR's DNS suffix for a region: China's partition has its own."""
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def registry_account(region):
    """The account whose ECR registry serves the Deep Learning Containers in region."""
    try:
        return REGION_ACCOUNTS[region]
    except KeyError:
        raise DLCError(
            "no Deep Learning Containers registry is known for region '%s'; known regions: %s"
            % (region, ", ".join(sorted(REGION_ACCOUNTS)))
        )


def registry_host(account, region):
    """<account>.dkr.ecr.<region>.amazonaws.com(.cn): what docker login and pull use."""
    return "%s.dkr.ecr.%s.%s" % (account, region, registry_domain(region))


_ECR_REFERENCE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@.*)?$")


def describe_reference(uri):
    """The facts of an image given as a full reference: an ECR image names its account and region
    (the login needs them); any other registry needs no ECR login."""
    match = _ECR_REFERENCE.match(uri or "")
    host, _slash, rest = (uri or "").partition("/")
    facts = {"uri": uri, "registry": host if rest else None, "registry_id": None, "account": None, "region": None,
             "login_required": False, "repository": None, "tag": None, "version": None, "accelerator": None,
             "architecture": None, "python": None, "cuda": None, "os": None, "end_of_support": None,
             "past_end_of_support": False}
    if match:
        facts.update(registry_id=match.group("account"), account=match.group("account"), region=match.group("region"),
                     login_required=True, repository=match.group("repository"), tag=match.group("tag"))
    return facts


def normalize_python(value):
    """'3.12', '312', 'py312', 'python3.12' -> 'py312'."""
    if value in (None, ""):
        return None
    text = str(value).strip().lower()
    match = re.match(r"^(?:py|python)?(\d)\.?(\d+)$", text)
    if not match:
        raise DLCError("python_version '%s' is not a Python version (e.g. 3.12 or py312)" % value)
    return "py%s%s" % match.groups()


def normalize_cuda(value):
    """'12.4', '124', 'cu124', 'cuda12.4' -> 'cu124'."""
    if value in (None, ""):
        return None
    text = str(value).strip().lower()
    match = re.match(r"^(?:cu|cuda)?(\d{2})\.?(\d)$", text)
    if not match:
        raise DLCError("cuda_version '%s' is not a CUDA version (e.g. 12.4 or cu124)" % value)
    return "cu%s%s" % match.groups()


def _version_key(version):
    return tuple(int(p) for p in version.split("."))


def _version_matches(image, wanted):
    """'2.6' matches the 2.6 series, '2.6.0' only that release."""
    return wanted in (image["version"], image["full_version"])


def _criteria(framework_version, accelerator, architecture, python, cuda, os_name, repository):
    criteria = {}
    if framework_version:
        criteria["version"] = lambda img: _version_matches(img, framework_version)
    if accelerator:
        criteria["accelerator"] = lambda img: img["accelerator"] == accelerator
    if architecture:
        criteria["architecture"] = lambda img: img["architecture"] == architecture
    if python:
        criteria["python"] = lambda img: img["python"] == python
    if cuda:
        criteria["cuda"] = lambda img: img["cuda"] == cuda
    if os_name:
        criteria["os"] = lambda img: img["os"] == os_name
    if repository:
        criteria["repository"] = lambda img: img["repository"] == repository
    return criteria


def describe(image):
    parts = [image["full_version"], image["accelerator"], image["architecture"]]
    parts += [p for p in (image["python"], image["cuda"], image["os"]) if p]
    return "%s:%s (%s)" % (image["repository"], image["tags"][0], ", ".join(parts))


def nearest(criteria, framework_version=None, limit=5):
    """The images that meet most of the criteria, closest version first."""
    def score(img):
        met = sum(1 for check in criteria.values() if check(img))
        distance = 0.0
        if framework_version:
            try:
                wanted = _version_key(framework_version)[:2]
                have = _version_key(img["version"])[:2]
                distance = abs((wanted[0] - have[0]) * 100 + (wanted[1] - have[1] if len(wanted) > 1 else 0))
            except ValueError:
                distance = 0.0
        return (-met, distance, tuple(-p for p in _version_key(img["full_version"])))
    return sorted(IMAGES, key=score)[:limit]


def is_supported(image, today):
    """Not past its end of patching (eop) on today (a datetime.date)."""
    return not image["past_eop"] and not (image["eop"] and image["eop"] < today.isoformat())


def _no_image_for(instance_type, accelerator, architecture):
    """Why an instance type gets no image, and the kinds of instance type that would get one."""
    kinds = sorted({(img["accelerator"], img["architecture"]) for img in IMAGES}, reverse=True)
    return ("no Deep Learning Containers PyTorch training image runs on %s (%s, %s); instance types that have one: %s"
            % (instance_type, accelerator, architecture, "; ".join(instance_kind_examples(*k) for k in kinds)))


def resolve(framework_version=None, accelerator=None, instance_type=None, python_version=None,
            cuda_version=None, region=None, registry="private", repository=None, os_name=None,
            today=None):
    """Pick one image and return its facts and URI (a dict).

    Unset criteria are free. Without a framework version the newest supported image wins (not past
    its end of patching on today, default the clock's date); only where every match is past it, the
    newest of them (past_end_of_support tells). With a version, the newest image of it. On a tie,
    pytorch-training before pytorch. The instance type sets cpu/gpu and the architecture. Raises
    DLCError naming what would work when nothing matches.
    """
    architecture = None
    if instance_type:
        try:
            derived = instance_accelerator(instance_type)
            architecture = instance_architecture(instance_type)
        except ValueError as exc:
            raise DLCError(str(exc))
        if accelerator and accelerator != derived:
            raise DLCError("accelerator '%s' contradicts instance_type %s, which is a %s instance"
                           % (accelerator, instance_type, derived))
        accelerator = derived
        if not any(i["accelerator"] == accelerator and i["architecture"] == architecture for i in IMAGES):
            raise DLCError(_no_image_for(instance_type, accelerator, architecture))
    if accelerator not in (None, "cpu", "gpu"):
        raise DLCError("accelerator must be cpu or gpu, not '%s'" % accelerator)
    if registry not in ("private", "public"):
        raise DLCError("registry must be private or public, not '%s'" % registry)
    if repository and repository not in REPOSITORIES:
        raise DLCError("repository must be one of %s, not '%s'" % (", ".join(REPOSITORIES), repository))
    python = normalize_python(python_version)
    cuda = normalize_cuda(cuda_version)
    if cuda and accelerator == "cpu":
        raise DLCError("cuda_version %s was given for a cpu image" % cuda_version)
    framework_version = str(framework_version).strip() if framework_version not in (None, "") else None
    if repository == "pytorch-training" and architecture == "arm64":
        repository = "pytorch-training-arm64"
    # Without an instance type the host is taken to be x86_64, as in SageMaker's default.
    architecture = architecture or ("arm64" if repository == "pytorch-training-arm64" else "x86_64")

    criteria = _criteria(framework_version, accelerator, architecture, python, cuda, os_name, repository)
    if registry == "public":
        criteria["public_registry"] = lambda img: img["public_registry"]
    matches = [img for img in IMAGES if all(check(img) for check in criteria.values())]
    if not matches:
        asked = ", ".join("%s=%s" % (k, v) for k, v in (
            ("framework_version", framework_version), ("accelerator", accelerator),
            ("architecture", architecture), ("python", python), ("cuda", cuda), ("os", os_name),
            ("repository", repository)) if v)
        raise DLCError("no Deep Learning Containers image matches %s; nearest valid images: %s"
                       % (asked or "the request", "; ".join(describe(i) for i in nearest(criteria, framework_version))))
    today = today or datetime.date.today()
    if not framework_version:
        matches = [img for img in matches if is_supported(img, today)] or matches
    # Newest first; on a tie the classic repository (the blog's) before the newer one.
    image = sorted(matches, key=lambda i: (_version_key(i["full_version"]), i["repository"] == "pytorch-training"),
                   reverse=True)[0]

    tag = image["tags"][0]
    if registry == "public":
        account, host = None, PUBLIC_REGISTRY.split("/", 1)[0]
        uri = "%s/%s:%s" % (PUBLIC_REGISTRY, image["repository"], tag)
    else:
        if not region:
            raise DLCError("region is required for the private (ECR) registry; or use registry=public")
        account = registry_account(region)
        host = registry_host(account, region)
        uri = "%s/%s:%s" % (host, image["repository"], tag)

    return {
        "uri": uri,
        "registry": host,
        "registry_id": account,
        "account": account,
        "region": region if registry == "private" else None,
        "login_required": registry == "private",
        "repository": image["repository"],
        "tag": tag,
        "version": image["full_version"],
        "accelerator": image["accelerator"],
        "architecture": image["architecture"],
        "python": image["python"],
        "cuda": image["cuda"],
        "os": image["os"],
        "end_of_support": image["eop"],
        "past_end_of_support": not is_supported(image, today),
    }
