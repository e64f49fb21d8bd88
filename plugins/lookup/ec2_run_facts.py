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
    instance type is offered in the region, that the account's running-instance vCPU quota for the type's family
    (Service Quotas, on-demand or spot) minus the vCPUs already running has room for it, resolves the AMI (override or the SSM parameter that fits the
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
  instance_types:
    description:
      - >-
        Instance types in order of preference, instead of O(instance_type). Each is checked (offered in the region,
        an AMI, vCPU quota room, a subnet); those that fail are left out with a warning, and only when all fail
        are their problems returned. The launch candidates are RV(_raw.candidates).
    type: list
    elements: str
    default: []
  market:
    description: C(on-demand) or C(spot), the vCPU quota (Service Quotas) the launch counts against.
    type: str
    default: on-demand
  instance_count:
    description: How many instances the run keeps; the quota must have room for those not running yet.
    type: int
    default: 1
  root_volume_type:
    description: Root volume type, for the hourly price behind O(max_cost).
    type: str
    default: gp3
  max_hours:
    description: Hours after boot when an instance must be off (0 - no limit); gives each candidate's C(hard_limit_seconds).
    type: float
    default: 0
  max_cost:
    description: >-
      USD the run may cost on demand (0 - no limit), turned into a time limit with the shipped price table; a type
      without a price there is refused.
    type: float
    default: 0
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
    candidates:
      description: >-
        Where a launch may go, in order: C(instance_type), C(zone), C(subnet_id), C(vpc_id), C(image) (as RV(_raw.image)),
        C(hard_limit_seconds). One per zone offering the type, the types in order of preference.
      type: list
      elements: dict
    warnings:
      description: What was not checked or left out (also shown as warnings), e.g. a vCPU quota Service Quotas would not tell.
      type: list
      elements: str
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
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _prices as prices
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _vcpu_quotas as quotas
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
        result = {"problems": [], "warnings": [], "region": region}
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

        # Read first: a run that already has its instances launches nothing, so no quota applies.
        if opt("all_runs"):
            result["resources"] = {"instances": facts.all_runs(ec2)}
        elif opt("run_name") or opt("instance_ids"):
            result["resources"] = facts.run_resources(
                ec2, self.client("iam", retry), opt("run_name"), opt("resource_name"), opt("instance_ids"))
        instance_types = list(opt("instance_types") or []) or ([opt("instance_type")] if opt("instance_type") else [])
        if instance_types:
            self._check_launch(ec2, instance_types, result)
        for warning in result["warnings"]:
            self._display.warning(warning)
        return result

    def _check_launch(self, ec2, instance_types, result):
        """Every type in order of preference: offered, an image, quota room, subnets; the launch candidates."""
        opt = self.get_option
        region = result["region"]
        ssm = self.client("ssm", AWSRetry.jittered_backoff())
        live = [i for i in result.get("resources", {}).get("instances", []) if i["state"] in ("pending", "running")]
        count = opt("instance_count")
        launching = len(live) < count
        quotas = Quotas(self, ec2, opt("market"), region, result["warnings"]) if launching else None
        # A run whose instances exist keeps their type: ec2_instance would try to change it otherwise.
        existing = {i["instance_type"] for i in result.get("resources", {}).get("instances", [])}
        ordered = [t for t in instance_types if t in existing] + [t for t in instance_types if t not in existing]
        refused, candidates = [], []
        for instance_type in ordered:
            found = self._check_type(ec2, ssm, instance_type, quotas, count - len(live))
            if "problem" in found:
                refused.append((instance_type, found["problem"]))
                continue
            for network in found["networks"]:
                candidates.append(dict(network, instance_type=instance_type, image=found["image"],
                                       hard_limit_seconds=found["hard_limit_seconds"]))
        if not candidates:
            several = len(refused) > 1
            result["problems"].extend(
                dict(p, message=("(%s) " % t if several and t not in p["message"] else "") + p["message"]) for t, p in refused)
            return
        result["warnings"].extend("instance_type %s is left out: %s: %s" % (t, p["field"], p["message"]) for t, p in refused)
        result["candidates"] = candidates
        first = candidates[0]
        result["image"] = first["image"]
        result["zones"] = [c["zone"] for c in candidates if c["instance_type"] == first["instance_type"]]
        result["network"] = {k: first[k] for k in ("subnet_id", "vpc_id", "zone")}

    def _check_type(self, ec2, ssm, instance_type, quotas, count):
        opt = self.get_option
        offered = facts.check_instance_type(ec2, instance_type, self.region)
        if "problem" in offered:
            return offered
        found = facts.resolve_image(ec2, ssm, instance_type, opt("ami_id"), opt("ami_ssm_parameters"))
        if "problem" in found:
            return found
        image = found["image"]
        wanted = opt("root_volume_size")
        if wanted and wanted < image["root_volume_size"]:
            return {"problem": facts.problem(
                "root_volume_size",
                "%d GiB is smaller than the %d GiB root volume AMI '%s' needs; accepted: %d or more"
                % (wanted, image["root_volume_size"], image["id"], image["root_volume_size"]))}
        if quotas is not None:
            short = quotas.check(instance_type, count)
            if short:
                return {"problem": facts.problem("instance_type", short)}
        hourly = prices.hourly_ceiling(instance_type, self.region, wanted or image["root_volume_size"],
                                       opt("root_volume_type"))
        if opt("max_cost") > 0 and hourly is None:
            return {"problem": facts.problem(
                "max_cost", "%s USD cannot be turned into a time limit: the price table (%s) has no price for %s "
                "in %s; accepted: max_hours instead" % (opt("max_cost"), prices.PRICE_DATE, instance_type, self.region))}
        networks = facts.candidate_subnets(ec2, opt("subnet_id"), opt("vpc_id"), offered["zones"])
        if "problem" in networks:
            return networks
        return {"image": image, "networks": networks["subnets"],
                "hard_limit_seconds": prices.hard_limit_seconds(opt("max_hours"), opt("max_cost"), hourly, count)}


class Quotas:
    """Service Quotas values and the vCPUs already running, asked once per quota class."""

    def __init__(self, lookup, ec2, market, region, warnings):
        self.market, self.region, self.warnings = market, region, warnings
        self.service_quotas = lookup.client("service-quotas", AWSRetry.jittered_backoff())
        self.running = [i for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
            for r in page["Reservations"] for i in r["Instances"]]
        self.ec2 = ec2
        self.vcpus = quotas.type_vcpus(ec2, [i["InstanceType"] for i in self.running]) if self.running else {}
        self.values = {}

    def check(self, instance_type, count):
        quota = quotas.quota_for(instance_type, self.market)
        if quota is None:
            self.warnings.append("%s counts against no running-instance vCPU quota this collection knows: "
                                 "its room is not checked" % instance_type)
            return None
        if quota["code"] not in self.values:
            self.values[quota["code"]] = quotas.quota_value(self.service_quotas, quota["code"])
        value = self.values[quota["code"]]
        if "unknown" in value:
            warning = ("the '%s' quota (%s) could not be read (%s): launches are tried without knowing whether they fit"
                       % (quota["name"], quota["code"], value["unknown"]))
            if warning not in self.warnings:
                self.warnings.append(warning)
            return None
        if instance_type not in self.vcpus:
            # Asked only now: DescribeInstanceTypes refuses a type the region does not offer.
            self.vcpus.update(quotas.type_vcpus(self.ec2, [instance_type]))
        in_use = quotas.running_vcpus(self.running, self.vcpus, quota["class"], self.market)
        return quotas.check_quota(instance_type, count, self.market, self.region, self.vcpus,
                                  dict(quota, value=value["value"], name=value["name"] or quota["name"]), in_use)
