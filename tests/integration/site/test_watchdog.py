"""The watchdog comes with the instance's user data, so it needs neither SSH nor the controller: an instance
nobody ever connected to, and one whose training finished before its controller died, both power off once
no training container and no SSH session has been seen for idle_minutes (one minute here), and the emulator
shows them stopped.

The first test launches through the fault proxy, which refuses the first choice of instance type in both
zones of the run's VPC: the launch lands on the third place it tries, and says so.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import boto3

from site_helpers import BIN, DATA, REPO, STANDIN, instance_states

sys.path.insert(0, str(STANDIN))
import faults  # noqa: E402  (tests/standin is plumbing, not a package)
import instances  # noqa: E402

NO_CAPACITY = "We currently do not have sufficient %s capacity in the Availability Zone you requested."


def _wait_stopped(run_name, since, limit):
    # The minute, then systemd's shutdown of the instance: over a minute on a loaded 2-core machine.
    while time.monotonic() < since + limit and instance_states(run_name) != ["stopped"]:
        time.sleep(2)
    return instance_states(run_name)


def _two_zone_vpc(ec2):
    """A VPC with one subnet in each of two zones: the places a launch can go, per type."""
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnets = {zone: ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
               for zone, cidr in (("us-east-1a", "10.77.1.0/24"), ("us-east-1b", "10.77.2.0/24"))}
    return vpc, subnets


def test_an_instance_never_reached_over_ssh_powers_off_after_idle_minutes(aws, standin, tmp_path):
    run_name = "watchdog-no-ssh"
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc, subnets = _two_zone_vpc(ec2)
    with faults.Proxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        for zone, subnet in subnets.items():
            proxy.refuse("RunInstances", "InsufficientInstanceCapacity", NO_CAPACITY % "m5.large",
                         InstanceType="m5.large", SubnetId=subnet)
        extra = {"run_name": run_name, "instance_type": ["m5.large", "m7i.large"], "vpc_id": vpc,
                 "ssh_cidrs": ["127.0.0.1/32"], "wait_for_connection": False, "idle_minutes": 1}
        env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        result = subprocess.run([str(BIN / "ansible-playbook"), "playbooks/provision.yml", "-e", "@" + str(standin),
                                 "-e", json.dumps(extra)], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600, check=False)
        launched = time.monotonic()
        tried = [(p["InstanceType"], p["SubnetId"], refused) for p, refused in proxy.tried("RunInstances")]
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, out[-3000:]
    assert tried == [("m5.large", subnets["us-east-1a"], "InsufficientInstanceCapacity"),
                     ("m5.large", subnets["us-east-1b"], "InsufficientInstanceCapacity"),
                     ("m7i.large", subnets["us-east-1a"], None)], tried
    assert ("landed on m7i.large in us-east-1a after m5.large in us-east-1a: InsufficientInstanceCapacity; "
            "m5.large in us-east-1b: InsufficientInstanceCapacity") in out, out[-3000:]
    [inst] = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:cloudtrain:run", "Values": [run_name]}])[
        "Reservations"] for i in r["Instances"]]
    assert (inst["InstanceType"], inst["Placement"]["AvailabilityZone"]) == ("m7i.large", "us-east-1a")

    assert _wait_stopped(run_name, launched, 60 + 200) == ["stopped"]
    assert time.monotonic() - launched > 55  # not before its idle minute
    assert instances.containers().get(inst["InstanceId"]) == "exited"


def test_an_instance_whose_training_finished_powers_off_with_the_controller_gone(aws, standin, tmp_path):
    run_name = "watchdog-alone"
    extra = {"run_name": run_name, "idle_minutes": 1, "epochs": 1, "train_poll_interval": 2,
             "train_args": ["--limit-train", "500", "--limit-test", "200", "--threads", "1"], "data_src": str(DATA),
             "artifacts_dir": str(tmp_path / "artifacts")}
    cmd = [str(BIN / "ansible-playbook"), "site.yml", "-e", "@" + str(STANDIN / "demo.yml"),
           "-e", "@" + str(standin), "-e", json.dumps(extra)]
    # ansible.cfg keeps SSH masters for 300 s after their last use, and they outlive a killed ansible-playbook:
    # the instance sees an SSH session until the master goes. Ten seconds here, so the test waits for the
    # watchdog's minute, not for the master.
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1",
               ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=10s -o ServerAliveInterval=30")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output = []
    killed_at = None
    try:
        for line in proc.stdout:
            output.append(line)
            # Training has exited (the follow task is done): the controller dies before the teardown.
            if "TASK [cloudtrain.ec2.train : Collect the results]" in line:
                killed_at = time.monotonic()
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_at is not None, "".join(output)[-3000:]
    assert instance_states(run_name) == ["running"]
    ec2 = boto3.client("ec2", region_name="us-east-1")
    [instance_id] = [i["InstanceId"] for r in ec2.describe_instances(
        Filters=[{"Name": "tag:cloudtrain:run", "Values": [run_name]}])["Reservations"] for i in r["Instances"]]

    assert _wait_stopped(run_name, killed_at, 10 + 60 + 200) == ["stopped"], "".join(output)[-3000:]
    assert time.monotonic() - killed_at > 40  # the idle minute counts from the last SSH session
    assert instances.containers().get(instance_id) == "exited"
