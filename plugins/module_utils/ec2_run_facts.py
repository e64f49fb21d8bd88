# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts about one training run's EC2 world, gathered in one boto3 session.

The provision and teardown roles call this through the ``cloudtrain.ec2.ec2_run_facts``
lookup: a lookup runs inside the controller's process, so checking the region, the
credentials, the instance type, the AMI and the network and finding what a run already
owns costs a handful of API calls instead of one module start-up (1.5-2 s) per question.

Every function takes boto3 clients and returns plain data. Problems with the inputs come
back as ``{"field": <input name without role prefix>, "message": ...}`` so that each role
can name its own variable; nothing here raises for bad input.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

try:
    import botocore.exceptions
except ImportError:  # pragma: no cover - the lookup reports a missing SDK itself
    pass

from ansible_collections.cloudtrain.ec2.plugins.module_utils.instance_types import (
    instance_accelerator,
    instance_architecture,
    parse_instance_type,
)
# The run's tags are defined once, in run_identity (re-exported here for the lookup's callers).
from ansible_collections.cloudtrain.ec2.plugins.module_utils.run_identity import MANAGED_BY, RUN_TAG  # noqa: F401

# Instance states that still cost money or can come back: everything short of terminated.
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]

CREDENTIAL_ERROR_CODES = {
    "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
    "ExpiredTokenException", "UnrecognizedClientException", "InvalidAccessKeyId",
}

CREDENTIALS_HELP = (
    "configure them with `aws configure` (or AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY in the environment); `make demo` in a checkout of the collection runs "
    "the whole job without an AWS account"
)


def problem(field: str, message: str) -> Dict[str, str]:
    return {"field": field, "message": message}


def error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""


def known_regions(session) -> List[str]:
    """Every EC2 region botocore knows in every partition (offline: botocore's endpoint data)."""
    regions = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition, allow_non_regional=False))
    return sorted(regions)


def check_region(session, region: Optional[str]) -> Optional[Dict[str, str]]:
    regions = known_regions(session)
    if region in regions:
        return None
    return problem("region", "'%s' is not an AWS region; accepted: %s" % (region, ", ".join(regions)))


def partition_for_region(session, region: str) -> str:
    return session.get_partition_for_region(region)


def check_credentials(sts) -> Dict[str, Any]:
    """Ask STS who we are: the one call that tells missing/invalid credentials apart clearly."""
    try:
        identity = sts.get_caller_identity()
    except botocore.exceptions.NoCredentialsError:
        return {"problem": problem("credentials", "no AWS credentials were found; " + CREDENTIALS_HELP)}
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in CREDENTIAL_ERROR_CODES:
            return {"problem": problem("credentials", "AWS rejected the credentials (%s); %s" % (error_code(exc), CREDENTIALS_HELP))}
        raise
    return {"account": identity["Account"], "arn": identity["Arn"]}


def _offered_types(ec2, location_type: str, filters: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    offers = []
    for page in ec2.get_paginator("describe_instance_type_offerings").paginate(LocationType=location_type, Filters=filters):
        offers.extend(page["InstanceTypeOfferings"])
    return offers


def _is_gpu(instance_type: str) -> bool:
    # Offered types include some this collection's parser does not take (u-6tb1.112xlarge, c7a.metal-48xl).
    try:
        return instance_accelerator(instance_type) == "gpu"
    except ValueError:
        return False


def check_instance_type(ec2, instance_type: str, region: str) -> Dict[str, Any]:
    """The availability zones of ``region`` that offer the type, or a problem naming the accepted types."""
    try:
        family = parse_instance_type(instance_type)["family"]
    except ValueError as exc:
        return {"problem": problem("instance_type", str(exc))}
    zones = sorted(o["Location"] for o in _offered_types(
        ec2, "availability-zone", [{"Name": "instance-type", "Values": [instance_type]}]))
    if zones:
        return {"zones": zones}
    offered = sorted(o["InstanceType"] for o in _offered_types(ec2, "region", []))
    same_family = [t for t in offered if t.startswith(family + ".")]
    accepted = same_family or [t for t in offered if _is_gpu(t)][:40] or offered[:40]
    return {"problem": problem(
        "instance_type",
        "'%s' is not an instance type offered in %s; accepted: one of the %d types offered there, e.g. %s"
        % (instance_type, region, len(offered), ", ".join(accepted)),
    )}


def image_parameter_key(instance_type: str) -> str:
    """Which of the AMI parameters applies: cpu_x86_64, cpu_arm64, gpu_x86_64 or gpu_arm64."""
    return "%s_%s" % (instance_accelerator(instance_type), instance_architecture(instance_type))


def ssh_user_for_image(image: Dict[str, Any]) -> str:
    """The login user of an AMI: ubuntu on Ubuntu, admin on Debian, ec2-user on Amazon Linux and the rest."""
    text = " ".join(str(image.get(k) or "") for k in ("Name", "Description", "ImageLocation")).lower()
    if "ubuntu" in text:
        return "ubuntu"
    if "debian" in text:
        return "admin"
    return "ec2-user"


def root_volume_size(image: Dict[str, Any]) -> int:
    root = image.get("RootDeviceName")
    for mapping in image.get("BlockDeviceMappings") or []:
        if mapping.get("DeviceName") == root and "Ebs" in mapping:
            return int(mapping["Ebs"].get("VolumeSize") or 0)
    return 0


def resolve_image(ec2, ssm, instance_type: str, image_id: str, parameters: Dict[str, str]) -> Dict[str, Any]:
    """Find the AMI (the override, or the SSM parameter for the type's accelerator and architecture)."""
    source_field = "ami_id"
    if not image_id:
        key = image_parameter_key(instance_type)
        name = (parameters or {}).get(key)
        if not name:
            return {"problem": problem("ami_ssm_parameters", "has no '%s' entry for %s" % (key, instance_type))}
        try:
            image_id = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise
            return {"problem": problem(
                "ami_ssm_parameters",
                "SSM parameter '%s' (entry '%s') does not exist in this region; set the entry to an existing "
                "parameter or set ami_id to an AMI ID" % (name, key),
            )}
        source_field = "ami_ssm_parameters"
    try:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    except botocore.exceptions.ClientError as exc:
        if not error_code(exc).startswith("InvalidAMIID"):
            raise
        images = []
    if not images:
        return {"problem": problem(source_field, "AMI '%s' does not exist in this region (or is not visible to this "
                                                 "account); accepted: an existing AMI ID (ami-...)" % image_id)}
    image = images[0]
    wanted_arch = instance_architecture(instance_type)
    if image.get("Architecture") != wanted_arch:
        return {"problem": problem(source_field, "AMI '%s' is built for %s but %s needs %s"
                                   % (image_id, image.get("Architecture"), instance_type, wanted_arch))}
    return {"image": {
        "id": image["ImageId"],
        "name": image.get("Name", ""),
        "architecture": image.get("Architecture"),
        "root_device_name": image.get("RootDeviceName") or "/dev/xvda",
        "root_volume_size": root_volume_size(image),
        "ssh_user": ssh_user_for_image(image),
    }}


def resolve_network(ec2, subnet_id: str, vpc_id: str, zones: List[str]) -> Dict[str, Any]:
    """The subnet to launch in: the given one, or a default/public subnet in a zone that offers the type."""
    if subnet_id:
        try:
            subnet = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
        except botocore.exceptions.ClientError as exc:
            if not error_code(exc).startswith("InvalidSubnetID"):
                raise
            return {"problem": problem("subnet_id", "subnet '%s' does not exist in this region; accepted: an existing "
                                                    "subnet ID, or empty for the default VPC" % subnet_id)}
        if vpc_id and subnet["VpcId"] != vpc_id:
            return {"problem": problem("subnet_id", "subnet '%s' is in %s, not in vpc_id %s" % (subnet_id, subnet["VpcId"], vpc_id))}
        return {"subnet_id": subnet_id, "vpc_id": subnet["VpcId"], "zone": subnet["AvailabilityZone"]}
    if vpc_id:
        filters = [{"Name": "vpc-id", "Values": [vpc_id]}]
        field = "vpc_id"
    else:
        filters = [{"Name": "default-for-az", "Values": ["true"]}]
        field = "subnet_id"
    subnets = ec2.describe_subnets(Filters=filters)["Subnets"]
    usable = [s for s in subnets if s["AvailabilityZone"] in zones] if zones else subnets
    # Prefer subnets that hand out public addresses, then the zone order, so the choice is stable.
    usable.sort(key=lambda s: (not s.get("MapPublicIpOnLaunch"), s["AvailabilityZone"], s["SubnetId"]))
    if not usable:
        where = "VPC %s" % vpc_id if vpc_id else "the default VPC"
        return {"problem": problem(field, "no subnet of %s is in a zone offering the instance type (%s); "
                                          "set subnet_id explicitly" % (where, ", ".join(zones) or "none"))}
    subnet = usable[0]
    return {"subnet_id": subnet["SubnetId"], "vpc_id": subnet["VpcId"], "zone": subnet["AvailabilityZone"]}


def candidate_subnets(ec2, subnet_id: str, vpc_id: str, zones: List[str]) -> Dict[str, Any]:
    """The subnets a launch may try in order: the given one, or one per zone offering the type.

    A second zone is where a launch goes when the first answers InsufficientInstanceCapacity.
    """
    if subnet_id:
        given = resolve_network(ec2, subnet_id, vpc_id, zones)
        return given if "problem" in given else {"subnets": [given]}
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}] if vpc_id else [{"Name": "default-for-az", "Values": ["true"]}]
    subnets = [s for s in ec2.describe_subnets(Filters=filters)["Subnets"] if s["AvailabilityZone"] in zones]
    subnets.sort(key=lambda s: (not s.get("MapPublicIpOnLaunch"), s["AvailabilityZone"], s["SubnetId"]))
    chosen, seen = [], set()
    for subnet in subnets:
        if subnet["AvailabilityZone"] not in seen:
            seen.add(subnet["AvailabilityZone"])
            chosen.append({"subnet_id": subnet["SubnetId"], "vpc_id": subnet["VpcId"], "zone": subnet["AvailabilityZone"]})
    # None usable: resolve_network words the problem.
    return {"subnets": chosen} if chosen else resolve_network(ec2, subnet_id, vpc_id, zones)


def _tags(items) -> Dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def _owned(tags: Dict[str, str], run_name: str) -> bool:
    return tags.get("managed-by") == MANAGED_BY and tags.get(RUN_TAG) == run_name


def _instance(inst: Dict[str, Any]) -> Dict[str, Any]:
    launched = inst.get("LaunchTime")
    return {
        "instance_id": inst["InstanceId"],
        "state": inst["State"]["Name"],
        "instance_type": inst.get("InstanceType"),
        "lifecycle": inst.get("InstanceLifecycle", "normal"),
        "tags": _tags(inst.get("Tags")),
        "run_name": _tags(inst.get("Tags")).get(RUN_TAG),
        "image_id": inst.get("ImageId"),
        "launch_time": launched.isoformat() if hasattr(launched, "isoformat") else launched,
        "public_ip": inst.get("PublicIpAddress") or "",
        "public_dns": inst.get("PublicDnsName") or "",
        "private_ip": inst.get("PrivateIpAddress") or "",
        "placement_group": (inst.get("Placement") or {}).get("GroupName") or "",
    }


def list_instances(ec2, queries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The live instances the describe_instances queries match, each once, sorted by ID, with the
    login user of their AMI (one DescribeImages call for all of them)."""
    seen = {}
    for query in queries:
        for page in ec2.get_paginator("describe_instances").paginate(**query):
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    seen[inst["InstanceId"]] = _instance(inst)
    image_ids = sorted({i["image_id"] for i in seen.values() if i["image_id"]})
    users = {}
    if image_ids:
        try:
            users = {img["ImageId"]: ssh_user_for_image(img) for img in ec2.describe_images(ImageIds=image_ids)["Images"]}
        except botocore.exceptions.ClientError as exc:
            # A deregistered AMI: its instances keep the default user.
            if error_code(exc) not in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"):
                raise
    for inst in seen.values():
        inst["ssh_user"] = users.get(inst["image_id"], "ec2-user")
    return [seen[k] for k in sorted(seen)]


def all_runs(ec2) -> List[Dict[str, Any]]:
    """Every live instance this collection launched, in every run of the account and region."""
    return list_instances(ec2, [{"Filters": [{"Name": "tag:managed-by", "Values": [MANAGED_BY]},
                                             {"Name": "instance-state-name", "Values": LIVE_STATES}]}])


def placement_group_of(instances: List[Dict[str, Any]], resource_name: str) -> Optional[str]:
    """The run's own placement group (named resource_name) if one of its instances is in it, else None."""
    return resource_name if any(i.get("placement_group") == resource_name for i in instances) else None


def run_resources(ec2, iam, run_name: str, resource_name: str, instance_ids: List[str]) -> Dict[str, Any]:
    """What exists for the run: live instances (by run tag and/or IDs) and the resources it created.

    A key pair, security group or launch template counts only when tagged by this collection for
    this run; the IAM role only when its tags say so; the instance profile only when it carries that
    role or no role. Anything else with the same name is someone else's and is left alone.
    """
    found: Dict[str, Any] = {"instances": [], "key_name": None, "security_group_ids": [],
                             "launch_template_name": None, "role_name": None, "instance_profile_name": None,
                             "placement_group_name": None}
    state_filter = {"Name": "instance-state-name", "Values": LIVE_STATES}
    queries = []
    if run_name:
        queries.append({"Filters": [{"Name": "tag:" + RUN_TAG, "Values": [run_name]}, state_filter]})
    if instance_ids:
        queries.append({"Filters": [{"Name": "instance-id", "Values": list(instance_ids)}, state_filter]})
    found["instances"] = list_instances(ec2, queries)
    if not run_name:
        return found
    # The run's cluster placement group, known from its instances (the group is named like the run's
    # other resources): no DescribePlacementGroups call for the many runs that have none.
    found["placement_group_name"] = placement_group_of(found["instances"], resource_name)

    owner_filters = [{"Name": "tag:managed-by", "Values": [MANAGED_BY]}, {"Name": "tag:" + RUN_TAG, "Values": [run_name]}]
    keys = ec2.describe_key_pairs(Filters=owner_filters)["KeyPairs"]
    found["key_name"] = keys[0]["KeyName"] if keys else None
    groups = ec2.describe_security_groups(Filters=owner_filters)["SecurityGroups"]
    found["security_group_ids"] = sorted(g["GroupId"] for g in groups)
    templates = ec2.describe_launch_templates(Filters=owner_filters)["LaunchTemplates"]
    found["launch_template_name"] = templates[0]["LaunchTemplateName"] if templates else None

    try:
        role = iam.get_role(RoleName=resource_name)["Role"]
        if _owned(_tags(role.get("Tags")), run_name):
            found["role_name"] = role["RoleName"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
    try:
        profile = iam.get_instance_profile(InstanceProfileName=resource_name)["InstanceProfile"]
        role_names = {r["RoleName"] for r in profile.get("Roles", [])}
        owned_role = found["role_name"]
        if (owned_role and role_names <= {owned_role}) or (not role_names and _owned(_tags(profile.get("Tags")), run_name)):
            found["instance_profile_name"] = profile["InstanceProfileName"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
    return found
