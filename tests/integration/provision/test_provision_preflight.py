"""The preflight refuses what AWS would refuse at launch (a vCPU quota without room, a type the region does
not offer, an AMI parameter that does not resolve) before anything is created; the capacity fallback moves
to the next zone, then the next type, and fails clearly when no choice has capacity.

The fault proxy (tests/standin/faults.py) stands in front of the emulator for these runs: it answers the
EC2 Service Quotas calls with the values a test chooses and RunInstances with the errors it chooses.
"""
from __future__ import annotations

import json
import sys

import pytest

from provision_helpers import REPO, run_owned, run_playbook

sys.path.insert(0, str(REPO / "tests" / "standin"))
import faults  # noqa: E402  (tests/standin is plumbing, not a package)

GOOD = {"region": "us-east-1", "ssh_cidrs": ["203.0.113.7/32"], "wait_for_connection": False,
        "provision_key_dir": "/nonexistent/never-written"}
NO_CAPACITY = "We currently do not have sufficient %s capacity in the Availability Zone you requested."


@pytest.fixture
def proxy(emulator_env):
    """The fault proxy, and the environment that sends the playbook's AWS calls through it."""
    with faults.Proxy(emulator_env["AWS_ENDPOINT_URL"]) as running:
        running.env = dict(emulator_env, AWS_ENDPOINT_URL=running.url)
        yield running


def _everything(clients):
    """Every resource a run could create, account-wide (not only what carries the run's name)."""
    ec2, iam = clients["ec2"], clients["iam"]
    return {
        "instances": sorted((i["InstanceId"], i["State"]["Name"]) for r in ec2.describe_instances()["Reservations"]
                            for i in r["Instances"]),
        "volumes": sorted(v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]),
        "key_pairs": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
        "security_groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "launch_templates": sorted(t["LaunchTemplateId"] for t in ec2.describe_launch_templates()["LaunchTemplates"]),
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "instance_profiles": sorted(p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]),
    }


def _flat(out):
    return " ".join(out.split())


CASES = {
    "gpu-quota-zero": (
        {"instance_type": "g4dn.xlarge"}, {"L-DB2E81BA": 0},
        ["provision_instance_type", "1 x g4dn.xlarge needs 4 vCPUs",
         "'Running On-Demand G and VT instances' quota (L-DB2E81BA)", "is 0 vCPUs with 0 in use",
         "ask for at least 4 in the Service Quotas console"]),
    "spot-quota-too-small": (
        {"instance_type": "m5.xlarge", "market": "spot"}, {"L-34B43A08": 2},
        ["provision_instance_type", "1 x m5.xlarge needs 4 vCPUs",
         "'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests' quota (L-34B43A08)", "is 2 vCPUs"]),
    "type-not-offered-in-region": (
        {"instance_type": "p3.2xlarge", "region": "eu-north-1"}, {},
        ["provision_instance_type", "'p3.2xlarge' is not an instance type offered in eu-north-1"]),
    "ami-parameter-unknown": (
        {"instance_type": "m5.large",
         "provision_ami_ssm_parameters": {"cpu_x86_64": "/cloudtrain/test/no-such-ami-parameter"}}, {},
        ["provision_ami_ssm_parameters", "SSM parameter '/cloudtrain/test/no-such-ami-parameter' (entry 'cpu_x86_64') "
         "does not exist"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_preflight_refuses_before_anything_is_created(proxy, clients, case):
    change, quotas, expected = CASES[case]
    for code, value in quotas.items():
        proxy.quota(code, value, name={"L-DB2E81BA": "Running On-Demand G and VT instances",
                                       "L-34B43A08": "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"}[code])
    run_name = "ct-pytest-preflight-" + case
    before = _everything(clients)
    rc, out = run_playbook(proxy.env, "provision.yml", json.dumps({**GOOD, "run_name": run_name, **change}))
    assert rc != 0, out
    for text in expected:
        assert text in _flat(out), out
    assert _everything(clients) == before
    assert run_owned(clients, run_name) == {}
    assert proxy.tried("RunInstances") == []


def test_an_unreadable_quota_is_a_warning_and_no_capacity_anywhere_a_clear_failure(proxy, clients):
    """The emulator answers the EC2 quotas with NoSuchResourceException: unknown, not zero. Every choice
    refused: the run fails naming each, and no instance is left."""
    for instance_type in ("m5.large", "m7i.large"):
        proxy.refuse("RunInstances", "InsufficientInstanceCapacity", NO_CAPACITY % instance_type, InstanceType=instance_type)
    run_name = "ct-pytest-preflight-no-capacity"
    rc, out = run_playbook(proxy.env, "provision.yml", json.dumps(
        {**GOOD, "run_name": run_name, "instance_type": "m5.large,m7i.large", "provision_key_dir": "/tmp/ct-pytest-keys"}))
    try:
        flat = _flat(out)
        assert rc != 0, out
        assert "'Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances' quota (L-1216C47A) could not be read" \
               " (NoSuchResourceException)" in flat, out
        assert "no candidate had capacity: m5.large in us-east-1a: InsufficientInstanceCapacity;" in flat, out
        assert "m7i.large in us-east-1f: InsufficientInstanceCapacity; accepted: more instance types" in flat, out
        tried = [(p["InstanceType"], refused) for p, refused in proxy.tried("RunInstances")]
        zones = clients["ec2"].describe_instance_type_offerings(
            LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": ["m5.large"]}])
        assert len(tried) == 2 * len(zones["InstanceTypeOfferings"]), tried
        assert all(refused == "InsufficientInstanceCapacity" for _type, refused in tried), tried
        assert "instances" not in run_owned(clients, run_name)
    finally:
        run_playbook(proxy.env, "teardown.yml", "run_name=" + run_name, "teardown_action=terminate")
    assert run_owned(clients, run_name) == {}
