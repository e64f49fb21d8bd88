# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure helpers of the image_manifest lookup: container image references and ECR registry names."""
from __future__ import annotations

import re

# <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]: where `docker pull` finds an ECR repository.
ECR_HOST = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")

# What a registry may answer a manifest request with: a multi-platform index or one image's manifest.
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))


def parse(image):
    """'host[:port]/path[:tag][@digest]' -> dict(registry, repository, reference).

    As Docker reads a reference: the first component is a registry when it has a '.' or ':' or
    is 'localhost'; otherwise the image is on Docker Hub (registry 'docker.io'). No tag means 'latest'.
    """
    image = image.strip()
    if not image or any(c.isspace() for c in image):
        raise ValueError("'%s' is not an image reference" % image)
    name, digest = image.partition("@")[::2]
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", name
    # A ':' after the last '/' starts the tag (one before it belongs to a registry's port).
    path, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    if not path or path.endswith("/") or (colon and not tag):
        raise ValueError("'%s' is not an image reference" % image)
    return {"registry": registry, "repository": path, "reference": digest or tag or "latest"}


def ecr_registry(registry):
    """(account, region) of an ECR registry host name, or None for any other registry."""
    match = ECR_HOST.match(registry)
    return (match.group("account"), match.group("region")) if match else None
