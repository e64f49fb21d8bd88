# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: ec2_run_facts
short_description: Check a training run's EC2 inputs and find what the run already owns, in one pass
version_added: 0.1.0
description:
  - Read-only. Checks the region against botocore's list, the credentials (STS GetCallerIdentity), that the
    instance type is offered in the region, resolves the AMI (override or the SSM parameter that fits the
    type's accelerator and architecture), checks the root volume against the AMI, picks the subnet, and
    lists the live instances, key pair, security group, launch template, IAM role and instance profile
    that carry the run's tags (V(managed-by=cloudtrain.ec2), V(cloudtrain:run=<run_name>)).
  - Runs in the controller's process, so the whole check costs no module start-up. Used by the
    C(cloudtrain.ec2.provision) and C(cloudtrain.ec2.teardown) roles for their preflight.
  - Problems with the inputs are returned in RV(_raw.problems), never raised, so the caller can name its own
    variables. Each step runs only when the earlier ones passed and its inputs are given.
options:
  instance_type:
    description: EC2 instance type to check and to pick the AMI for. Empty skips the type, AMI and network checks.
    type: str
    default: ''
  ami_id:
    description: AMI to use instead of the SSM parameters.
    type: str
    default: ''
  ami_ssm_parameters:
    description: SSM parameter names holding AMI IDs, keyed C(cpu_x86_64), C(cpu_arm64), C(gpu_x86_64), C(gpu_arm64).
    type: dict
    default: {}
  root_volume_size:
    description: Root volume size in GiB to check against the AMI's own root volume. 0 skips the check.
    type: int
    default: 0
  subnet_id:
    description: Subnet to launch in. Empty picks a default subnet (of O(vpc_id) when given) in a zone offering the type.
    type: str
    default: ''
  vpc_id:
    description: VPC to pick the subnet from.
    type: str
    default: ''
  run_name:
    description: Run whose instances and resources to find. Empty skips that step.
    type: str
    default: ''
  resource_name:
    description: Name of the run's IAM role and instance profile (IAM has no tag filter).
    type: str
    default: ''
  instance_ids:
    description: Instance IDs to look up as well as the run's tagged instances.
    type: list
    elements: str
    default: []
  all_runs:
    description:
      - List the live instances of every run of the collection in the region (tag V(managed-by=cloudtrain.ec2))
        instead of one run's instances and resources.
    type: bool
    default: false
    version_added: 0.2.0
extends_documentation_fragment:
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
"""

EXAMPLES = r"""
- name: Check the inputs and find the run's resources
  ansible.builtin.set_fact:
    run_facts: >-
      {{ query('cloudtrain.ec2.ec2_run_facts', region='eu-west-1', instance_type='g4dn.xlarge',
               ami_ssm_parameters={'gpu_x86_64': '/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id'},
               root_volume_size=100, run_name='mnist-1', resource_name='cloudtrain-mnist-1') | first }}
"""

RETURN = r"""
_raw:
  description: One dictionary.
  type: list
  elements: dict
  contains:
    problems:
      description: Input problems, each with C(field) (the input's name) and C(message) (value and accepted values).
      type: list
      elements: dict
    region:
      description: The region checked.
      type: str
    partition:
      description: The AWS partition of the region (C(aws), C(aws-cn), ...), for ARNs.
      type: str
    account:
      description: The account ID of the credentials.
      type: str
    zones:
      description: Availability zones of the region that offer the instance type.
      type: list
      elements: str
    image:
      description: The AMI (C(id), C(name), C(architecture), C(root_device_name), C(root_volume_size), C(ssh_user)).
      type: dict
    network:
      description: The subnet chosen (C(subnet_id), C(vpc_id), C(zone)).
      type: dict
    resources:
      description: >-
        What the run owns: C(instances) (C(instance_id), C(run_name), C(state), C(instance_type), C(lifecycle),
        C(tags), C(image_id), C(launch_time), C(public_ip), C(public_dns), C(private_ip), C(ssh_user)),
        C(key_name), C(security_group_ids), C(launch_template_name), C(role_name), C(instance_profile_name).
      type: dict
"""

try:
    import boto3
    import botocore
except ImportError:
    pass  # Handled by AWSLookupBase

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.plugin_utils.lookup import AWSLookupBase
from ansible_collections.cloudtrain.ec2.plugins.module_utils import ec2_run_facts as facts


class LookupModule(AWSLookupBase):
    def run(self, terms, variables, **kwargs):
        super().run(terms, variables, **kwargs)
        try:
            return [self._gather()]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise AnsibleLookupError("ec2_run_facts: AWS call failed: %s" % to_native(exc)) from exc

    def _gather(self):
        opt = self.get_option
        region = self.region
        result = {"problems": [], "region": region}
        session = boto3.session.Session()

        bad_region = facts.check_region(session, region)
        if bad_region:
            result["problems"].append(bad_region)
            return result
        result["partition"] = facts.partition_for_region(session, region)

        retry = AWSRetry.jittered_backoff()
        who = facts.check_credentials(self.client("sts", retry))
        if "problem" in who:
            result["problems"].append(who["problem"])
            return result
        result["account"] = who["account"]
        ec2 = self.client("ec2", retry)

        instance_type = opt("instance_type")
        if instance_type:
            self._check_launch(ec2, instance_type, result)
        if result["problems"]:
            return result

        if opt("all_runs"):
            result["resources"] = {"instances": facts.all_runs(ec2)}
        elif opt("run_name") or opt("instance_ids"):
            result["resources"] = facts.run_resources(
                ec2, self.client("iam", retry), opt("run_name"), opt("resource_name"), opt("instance_ids"))
        return result

    def _check_launch(self, ec2, instance_type, result):
        opt = self.get_option
        offered = facts.check_instance_type(ec2, instance_type, result["region"])
        if "problem" in offered:
            result["problems"].append(offered["problem"])
            return
        result["zones"] = offered["zones"]

        found = facts.resolve_image(ec2, self.client("ssm", AWSRetry.jittered_backoff()), instance_type,
                                    opt("ami_id"), opt("ami_ssm_parameters"))
        if "problem" in found:
            result["problems"].append(found["problem"])
            return
        image = result["image"] = found["image"]
        wanted = opt("root_volume_size")
        if wanted and wanted < image["root_volume_size"]:
            result["problems"].append(facts.problem(
                "root_volume_size",
                "%d GiB is smaller than the %d GiB root volume AMI '%s' needs; accepted: %d or more"
                % (wanted, image["root_volume_size"], image["id"], image["root_volume_size"])))

        network = facts.resolve_network(ec2, opt("subnet_id"), opt("vpc_id"), offered["zones"])
        if "problem" in network:
            result["problems"].append(network["problem"])
        else:
            result["network"] = network
