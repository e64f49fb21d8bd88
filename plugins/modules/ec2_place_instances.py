#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: ec2_place_instances
short_description: Launch a run's new instances in the first of several places that has capacity
version_added: 0.2.0
author:
  - cloudtrain.ec2 contributors (@cloudtrain)
description:
  - Calls C(RunInstances) for each of O(candidates) in order (an instance type, a subnet and the AMI that fits
    the type) until one launches. An answer in O(capacity_error_codes) (no capacity in that zone, type not
    taken there) moves on to the next candidate at once; any other error fails.
  - Exists because M(amazon.aws.ec2_instance) retries V(InsufficientInstanceCapacity) in the same place, for
    minutes. The C(cloudtrain.ec2.provision) role runs it only when the run has no instance yet, and hands the
    launched instances to M(amazon.aws.ec2_instance), which finds them by the run tag and waits for them.
  - A just-created instance profile is not usable for some seconds; that answer is retried in place.
options:
  candidates:
    description:
      - Places in order of preference, each with C(instance_type), C(subnet_id), C(image_id) and C(zone).
      - A candidate's own C(root_device_name) or C(user_data) (its AMI's root device, its watchdog limits) wins over
        the options of the same name.
    type: list
    elements: dict
    required: true
  count:
    description: How many instances to launch (all in one place).
    type: int
    default: 1
  key_name:
    description: Key pair name.
    type: str
  security_group_ids:
    description: Security groups of the instances.
    type: list
    elements: str
    default: []
  instance_profile_name:
    description: IAM instance profile name.
    type: str
  launch_template_name:
    description: Launch template (the spot market options) to launch from.
    type: str
  placement_group:
    description:
      - Placement group to launch the instances in (a cluster group for the nodes of one training job).
      - All instances of one call land in one zone in any case; the group also puts them close together in it.
    type: str
  user_data:
    description: User data script, run at first boot.
    type: str
  root_device_name:
    description: The AMI's root device; empty keeps the AMI's root volume as it is.
    type: str
    default: ''
  root_volume_size:
    description: Root volume size in GiB (encrypted, deleted with the instance).
    type: int
    default: 0
  root_volume_type:
    description: Root volume type.
    type: str
    default: gp3
  tags:
    description: Tags of the instances and their volumes.
    type: dict
    default: {}
  capacity_error_codes:
    description: AWS error codes that mean "not here, try the next candidate".
    type: list
    elements: str
    default: [InsufficientInstanceCapacity, InsufficientCapacity, Unsupported]
  profile_retries:
    description: How often to retry an instance profile EC2 does not see yet, 5 seconds apart.
    type: int
    default: 6
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Launch in the first zone, then the first type, that has capacity
  cloudtrain.ec2.ec2_place_instances:
    region: us-east-1
    candidates:
      - {instance_type: g5.xlarge, subnet_id: subnet-0a1b2c3d, image_id: ami-0123456789abcdef0, zone: us-east-1a}
      - {instance_type: g5.xlarge, subnet_id: subnet-1a2b3c4d, image_id: ami-0123456789abcdef0, zone: us-east-1b}
      - {instance_type: g4dn.xlarge, subnet_id: subnet-0a1b2c3d, image_id: ami-0123456789abcdef0, zone: us-east-1a}
    key_name: cloudtrain-mnist-1
    security_group_ids: [sg-0123456789abcdef0]
    instance_profile_name: cloudtrain-mnist-1
    root_device_name: /dev/xvda
    root_volume_size: 100
    tags: {Name: mnist-1, "cloudtrain:run": mnist-1}
"""

RETURN = r"""
instance_ids:
  description: The launched instances.
  returned: success
  type: list
  elements: str
landed:
  description: The candidate that launched (C(instance_type), C(zone), C(subnet_id), C(image_id)).
  returned: success
  type: dict
tried:
  description: The candidates refused before, each as C(<type> in <zone>) and the error code after a colon.
  returned: always
  type: list
  elements: str
"""

import time

try:
    import botocore
except ImportError:
    pass  # Handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def _code(exc):
    return exc.response.get("Error", {}).get("Code", "")


def _spec(module_params, candidate):
    params = dict(module_params)
    params.update({k: candidate[k] for k in ("root_device_name", "user_data") if candidate.get(k)})
    tags = [{"Key": k, "Value": str(v)} for k, v in sorted(params["tags"].items())]
    spec = {
        "ImageId": candidate["image_id"], "InstanceType": candidate["instance_type"], "SubnetId": candidate["subnet_id"],
        "MinCount": params["count"], "MaxCount": params["count"],
        "MetadataOptions": {"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 2},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}, {"ResourceType": "volume", "Tags": tags}],
    }
    optional = {
        "KeyName": params["key_name"],
        "SecurityGroupIds": params["security_group_ids"] or None,
        "IamInstanceProfile": {"Name": params["instance_profile_name"]} if params["instance_profile_name"] else None,
        "LaunchTemplate": {"LaunchTemplateName": params["launch_template_name"]} if params["launch_template_name"] else None,
        "UserData": params["user_data"],
        "Placement": {"GroupName": params["placement_group"]} if params.get("placement_group") else None,
    }
    spec.update({k: v for k, v in optional.items() if v})
    if params["root_device_name"]:
        ebs = {"VolumeType": params["root_volume_type"], "Encrypted": True, "DeleteOnTermination": True}
        if params["root_volume_size"]:
            ebs["VolumeSize"] = params["root_volume_size"]
        spec["BlockDeviceMappings"] = [{"DeviceName": params["root_device_name"], "Ebs": ebs}]
    return spec


def _launch(module, ec2, spec):
    for attempt in range(module.params["profile_retries"] + 1):
        try:
            return ec2.run_instances(**spec)
        except botocore.exceptions.ClientError as exc:
            if "Invalid IAM Instance Profile" not in str(exc) or attempt == module.params["profile_retries"]:
                raise
            time.sleep(5)
    return None  # not reached


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            candidates=dict(type="list", elements="dict", required=True),
            count=dict(type="int", default=1),
            key_name=dict(type="str"),
            security_group_ids=dict(type="list", elements="str", default=[]),
            instance_profile_name=dict(type="str"),
            launch_template_name=dict(type="str"),
            placement_group=dict(type="str"),
            user_data=dict(type="str"),
            root_device_name=dict(type="str", default=""),
            root_volume_size=dict(type="int", default=0),
            root_volume_type=dict(type="str", default="gp3"),
            tags=dict(type="dict", default={}),
            capacity_error_codes=dict(type="list", elements="str",
                                      default=["InsufficientInstanceCapacity", "InsufficientCapacity", "Unsupported"]),
            profile_retries=dict(type="int", default=6),
        ),
        supports_check_mode=True,
    )
    candidates = module.params["candidates"]
    if not candidates:
        module.fail_json(msg="no candidate to launch in", tried=[])
    if module.check_mode:
        module.exit_json(changed=True, instance_ids=[], landed=candidates[0], tried=[])
    # No retry decorator: a refusal must move on to the next place, not wait in this one.
    ec2 = module.client("ec2")
    tried = []
    for candidate in candidates:
        where = "%s in %s" % (candidate["instance_type"], candidate.get("zone") or candidate["subnet_id"])
        try:
            answer = _launch(module, ec2, _spec(module.params, candidate))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in module.params["capacity_error_codes"]:
                module.fail_json_aws(exc, msg="launching %s failed" % where, tried=tried)
            tried.append("%s: %s" % (where, _code(exc)))
            continue
        except botocore.exceptions.BotoCoreError as exc:
            module.fail_json_aws(exc, msg="launching %s failed" % where, tried=tried)
        module.exit_json(changed=True, instance_ids=[i["InstanceId"] for i in answer["Instances"]],
                         landed=candidate, tried=tried)
    module.fail_json(msg="no candidate had capacity: %s; accepted: more instance types (instance_type may be a list), "
                         "another region, or a later try" % "; ".join(tried), tried=tried)


if __name__ == "__main__":
    main()
