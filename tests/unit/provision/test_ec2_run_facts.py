"""Pure helpers of the ec2_run_facts lookup: no AWS call (fake clients where one is needed)."""
from __future__ import annotations

import boto3
import botocore.exceptions
import pytest

from ansible_collections.cloudtrain.ec2.plugins.module_utils import ec2_run_facts as facts


@pytest.mark.parametrize("instance_type, key", [
    ("g4dn.xlarge", "gpu_x86_64"),
    ("p5.48xlarge", "gpu_x86_64"),
    ("g5g.xlarge", "gpu_arm64"),
    ("m7i.large", "cpu_x86_64"),
    ("c7g.large", "cpu_arm64"),
    ("inf2.xlarge", "cpu_x86_64"),
])
def test_image_parameter_key_follows_accelerator_and_architecture(instance_type, key):
    assert facts.image_parameter_key(instance_type) == key


@pytest.mark.parametrize("image, user", [
    ({"Name": "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240101"}, "ubuntu"),
    ({"Name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20240101"}, "ubuntu"),
    ({"Name": "debian-12-amd64-20240101"}, "admin"),
    ({"Name": "al2023-ami-2023.6.20241010.0-kernel-6.1-x86_64"}, "ec2-user"),
    ({"Name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023) 20240101"}, "ec2-user"),
    ({}, "ec2-user"),
])
def test_ssh_user_comes_from_the_image_name(image, user):
    assert facts.ssh_user_for_image(image) == user


def test_root_volume_size_reads_the_root_mapping_only():
    image = {"RootDeviceName": "/dev/xvda", "BlockDeviceMappings": [
        {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
        {"DeviceName": "/dev/xvdf", "Ebs": {"VolumeSize": 500}},
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 75}},
    ]}
    assert facts.root_volume_size(image) == 75
    assert facts.root_volume_size({"RootDeviceName": "/dev/xvda", "BlockDeviceMappings": []}) == 0


def test_region_check_uses_botocore_data_and_lists_accepted_regions():
    session = boto3.session.Session()
    assert facts.check_region(session, "eu-central-1") is None
    assert facts.check_region(session, "cn-north-1") is None
    bad = facts.check_region(session, "eu-moon-1")
    assert bad["field"] == "region"
    assert "'eu-moon-1' is not an AWS region" in bad["message"] and "us-east-1" in bad["message"]
    assert facts.partition_for_region(session, "cn-north-1") == "aws-cn"
    assert facts.partition_for_region(session, "us-gov-west-1") == "aws-us-gov"
    assert facts.partition_for_region(session, "eu-west-1") == "aws"


class _FakeSts:
    def __init__(self, exc=None):
        self.exc = exc

    def get_caller_identity(self):
        if self.exc:
            raise self.exc
        return {"Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/x"}


def test_credentials_missing_or_rejected_say_how_to_fix_them():
    missing = facts.check_credentials(_FakeSts(botocore.exceptions.NoCredentialsError()))["problem"]
    assert missing["field"] == "credentials"
    assert "no AWS credentials were found" in missing["message"] and "aws configure" in missing["message"]
    rejected = facts.check_credentials(_FakeSts(botocore.exceptions.ClientError(
        {"Error": {"Code": "InvalidClientTokenId", "Message": "bad"}}, "GetCallerIdentity")))["problem"]
    assert "rejected the credentials (InvalidClientTokenId)" in rejected["message"]
    assert facts.check_credentials(_FakeSts()) == {"account": "123456789012", "arn": "arn:aws:iam::123456789012:user/x"}


def test_other_client_errors_are_not_mistaken_for_credentials():
    with pytest.raises(botocore.exceptions.ClientError):
        facts.check_credentials(_FakeSts(botocore.exceptions.ClientError(
            {"Error": {"Code": "Throttling", "Message": "slow down"}}, "GetCallerIdentity")))


def test_placement_group_of_the_run_only():
    instances = [{"instance_id": "i-1", "placement_group": ""}, {"instance_id": "i-2", "placement_group": "cloudtrain-r"}]
    assert facts.placement_group_of(instances, "cloudtrain-r") == "cloudtrain-r"
    # someone else's group, or none: not the run's to delete
    assert facts.placement_group_of([{"placement_group": "their-group"}], "cloudtrain-r") is None
    assert facts.placement_group_of([], "cloudtrain-r") is None
