# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an EC2 instance type implies for training: CPU or NVIDIA GPU, x86_64 or arm64.

One table for the whole collection: the provision role picks the AMI with it, the image
resolver picks the cpu/gpu image with it, the train role decides on ``--gpus all`` with it.
"""
from __future__ import annotations

import re

# Families with NVIDIA GPUs (CUDA images and the NVIDIA container runtime apply).
# g4ad has AMD GPUs and the trn/inf/dl families have other accelerators: for a CUDA
# training image these are CPU instances.
NVIDIA_GPU_FAMILIES = frozenset((
    "g3", "g3s", "g4dn", "g5", "g5g", "g6", "g6e", "g6f", "gr6", "gr6f", "g7e",
    "p2", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6-b300", "p6e-gb200",
))

# NVIDIA Grace CPUs (arm64) whose family name has no Graviton "g".
GRACE_FAMILIES = frozenset(("p6e-gb200",))

# <family>.<size>: family = letters, generation digit(s), optional attribute letters,
# optional "-suffix" (p6-b200, u7i-12tb, m7i-flex).
_INSTANCE_TYPE = re.compile(r"^(?P<family>(?P<series>[a-z]+)(?P<gen>\d+)(?P<attrs>[a-z]*)(?:-[a-z0-9]+)?)\.(?P<size>[a-z0-9]+)$")


def parse_instance_type(instance_type):
    """Split an instance type into its parts; ValueError when it is not of EC2's form."""
    match = _INSTANCE_TYPE.match(str(instance_type or "").strip().lower())
    if not match:
        raise ValueError(
            "'%s' is not an EC2 instance type (expected <family>.<size>, e.g. g4dn.xlarge)" % instance_type
        )
    return match.groupdict()


def instance_family(instance_type):
    return parse_instance_type(instance_type)["family"]


def instance_accelerator(instance_type):
    """'gpu' for NVIDIA GPU instance types, 'cpu' for every other type."""
    return "gpu" if instance_family(instance_type) in NVIDIA_GPU_FAMILIES else "cpu"


def instance_architecture(instance_type):
    """'arm64' for Graviton types (a 'g' among the attribute letters: m7g, c6gn, g5g) and Grace ones
    (p6e-gb200), else 'x86_64'."""
    parts = parse_instance_type(instance_type)
    # The leading "g" of GPU families is the series, not an attribute: g4dn is x86_64, g5g is arm64.
    return "arm64" if "g" in parts["attrs"] or parts["family"] in GRACE_FAMILIES else "x86_64"


def instance_kind_examples(accelerator, architecture):
    """Words for the instance types of one kind, e.g. 'arm64 GPU types (g5g)', for messages."""
    if accelerator == "gpu":
        families = sorted(f for f in NVIDIA_GPU_FAMILIES if instance_architecture(f + ".xlarge") == architecture)
        return "%s NVIDIA GPU types (%s)" % (architecture, ", ".join(families))
    examples = "m7g, c7g, r7g" if architecture == "arm64" else "m7i, c7i, r7i, m6i, c6i, t3"
    return "%s CPU types (%s, ...)" % (architecture, examples)
