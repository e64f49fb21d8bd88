"""moto's server with the public SSM parameters the collection reads and moto does not ship.

    python tests/standin/emulator_server.py -H 127.0.0.1 -p 5055     (emulator.py starts it)

moto loads /aws/service/ami-amazon-linux-latest/* (Amazon Linux 2023, x86_64 and arm64) on first
use, but not the Deep Learning AMIs' /aws/service/deeplearning/* parameters, and refuses a
PutParameter under /aws/. So they are loaded here the way moto loads its own: on first use, per
region, again after every reset. They point at AMIs the emulator has: its "Deep Learning AMI
Amazon Linux" (x86_64), and the Amazon Linux 2023 arm64 image for the arm64 GPU family.

Every region's images also hold the stand-in's golden AMI (emulator.GOLDEN_AMI_ID): loaded with
moto's own AMIs, so a reset keeps it and its id never changes (a RegisterImage would not survive
the tests' resets).

A spot instance says so, as on AWS: DescribeInstances gives InstanceLifecycle "spot" (moto keeps the
flag but does not return it), also for one launched from a launch template that asks for the spot
market (moto sets it only when RunInstances itself asks).
"""
from __future__ import annotations

import sys
from collections import defaultdict

from moto import server
from moto.ec2.models import amis
from moto.ec2.models import instances
from moto.ssm import models

import emulator

DLAMI = "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
AL2023_ARM64 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
DLAMI_X86_64 = "ami-999844e0"


def _dlami_values(params: models.ParameterDict) -> dict[str, str]:
    values = {DLAMI.format(arch="x86_64"): DLAMI_X86_64}
    arm = params[AL2023_ARM64] if AL2023_ARM64 in params else []
    if arm:
        values[DLAMI.format(arch="arm64")] = arm[-1].value
    return values


_original = models.ParameterDict._check_loading_status


def _check_loading_status(self: models.ParameterDict, key: str) -> None:
    _original(self, key)
    if str(key or "").startswith("/aws/service/deeplearning") and not getattr(self, "dlami_loaded", False):
        self.dlami_loaded = True
        for name, value in _dlami_values(self).items():
            # defaultdict's own item access: the overridden one would come back here.
            defaultdict.__getitem__(self, name).append(models.Parameter(
                account_id=self.account_id, name=name, value=value, parameter_type="String",
                description=None, allowed_pattern=None, keyid=None,
                last_modified_date=models.utcnow(), version=1, data_type="aws:ec2:image"))


models.ParameterDict._check_loading_status = _check_loading_status

_original_load_amis = amis.AmiBackend._load_amis


def _load_amis(self: amis.AmiBackend) -> None:
    _original_load_amis(self)
    self.amis[emulator.GOLDEN_AMI_ID] = amis.Ami(
        self, emulator.GOLDEN_AMI_ID, name=emulator.GOLDEN_AMI_NAME,
        description="Deep Learning Base AMI with Docker and the training image already pulled (cloudtrain stand-in)",
        architecture="x86_64", virtualization_type="hvm", hypervisor="xen", root_device_type="ebs",
        root_device_name="/dev/xvda", image_location="cloudtrain-standin/golden", public=False)


amis.AmiBackend._load_amis = _load_amis

_original_run_instances = instances.InstanceBackend.run_instances


def _run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
    reservation = _original_run_instances(self, image_id, count, user_data, security_group_names, **kwargs)
    if kwargs.get("launch_template"):
        template = self._get_template_from_args(kwargs["launch_template"]).data
        if template.get("InstanceMarketOptions", {}).get("MarketType") == "spot":
            for instance in reservation.instances:
                instance.lifecycle = "spot"
    return reservation


instances.InstanceBackend.run_instances = _run_instances
# The response serialiser reads the shape's InstanceLifecycle from this name.
instances.Instance.instance_lifecycle = property(lambda self: self.lifecycle)

if __name__ == "__main__":
    sys.exit(server.main(sys.argv[1:]))
