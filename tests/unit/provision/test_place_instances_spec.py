"""The RunInstances request of cloudtrain.ec2.ec2_place_instances (a cluster's placement group)."""
from __future__ import annotations

import pytest


@pytest.fixture(name="place")
def _place():
    # Imported in the test, not at collection: ansible-core patches sys.intern on import, and torch
    # (imported by the trainer's tests collected in the same process) refuses to start after that.
    from ansible_collections.cloudtrain.ec2.plugins.modules import ec2_place_instances
    return ec2_place_instances


PARAMS = {"count": 2, "key_name": "k", "security_group_ids": ["sg-1"], "instance_profile_name": "p",
          "launch_template_name": None, "user_data": None, "root_device_name": "", "root_volume_size": 0,
          "root_volume_type": "gp3", "tags": {"cloudtrain:run": "r"}, "placement_group": None}
CANDIDATE = {"instance_type": "g5.12xlarge", "zone": "us-east-1a", "subnet_id": "subnet-1", "image_id": "ami-1"}


def test_nodes_of_a_cluster_launch_in_its_placement_group(place):
    spec = place._spec(dict(PARAMS, placement_group="cloudtrain-r"), CANDIDATE)
    assert spec["Placement"] == {"GroupName": "cloudtrain-r"}
    assert spec["MinCount"] == spec["MaxCount"] == 2 and spec["SubnetId"] == "subnet-1"


def test_no_placement_without_a_group(place):
    assert "Placement" not in place._spec(PARAMS, CANDIDATE)
