"""Bad input fails before anything is created, naming the variable and the accepted values."""
from __future__ import annotations

import json

import pytest

from provision_helpers import run_owned, run_playbook

# Inputs that pass, so each case changes exactly one thing. The CIDR is explicit: no lookup leaves the machine.
GOOD = {"instance_type": "m5.large", "region": "us-east-1", "ssh_cidrs": ["203.0.113.7/32"],
        "wait_for_connection": False, "provision_key_dir": "/nonexistent/never-written"}

CASES = {
    "unknown-instance-type": ({"instance_type": "g4dn.huge"},
                              ["provision_instance_type", "'g4dn.huge' is not an instance type offered in us-east-1",
                               "g4dn.xlarge"]),
    "malformed-instance-type": ({"instance_type": "gpu-large"}, ["provision_instance_type", "g4dn.xlarge"]),
    "unknown-region": ({"region": "us-moon-1"},
                       ["provision_region", "'us-moon-1' is not an AWS region; accepted:", "eu-west-1"]),
    "volume-below-image": ({"root_volume_size": 10},
                           ["provision_root_volume_size", "10 GiB is smaller than the 15 GiB", "accepted: 15 or more"]),
    "instance-count-zero": ({"instance_count": 0},
                            ["provision_instance_count", "accepted: an integer of 1 or more"]),
    "ami-missing": ({"ami_id": "ami-0123456789abcdef0"},
                    ["provision_ami_id", "AMI 'ami-0123456789abcdef0' does not exist", "accepted: an existing AMI ID"]),
    "ami-wrong-architecture": ({"ami_id": "ami-065b1b834d2a83a7a"},
                               ["provision_ami_id", "is built for arm64 but m5.large needs x86_64"]),
    "market-unknown": ({"market": "cheap"}, ["provision_market", "on-demand, spot"]),
    "ssh-open-to-world": ({"ssh_cidrs": ["0.0.0.0/0"]},
                          ["provision_ssh_cidrs", "provision_ssh_allow_anywhere: true"]),
    "nodes-on-spot": ({"nodes": 2, "market": "spot"},
                      ["provision_cluster: true with provision_market: spot is not supported",
                       "accepted: provision_market: on-demand"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_before_creating_anything(emulator_env, clients, case):
    change, expected = CASES[case]
    run_name = "ct-pytest-bad-" + case
    rc, out = run_playbook(emulator_env, "provision.yml", json.dumps({**GOOD, "run_name": run_name, **change}))
    assert rc != 0, out
    flat = " ".join(out.split())
    for text in expected:
        assert text in flat, out
    assert run_owned(clients, run_name) == {}


def test_missing_credentials_say_how_to_configure_them(emulator_env, clients, tmp_path):
    env = {k: v for k, v in emulator_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    run_name = "ct-pytest-bad-no-credentials"
    rc, out = run_playbook(env, "provision.yml", json.dumps({**GOOD, "run_name": run_name}))
    assert rc != 0, out
    flat = " ".join(out.split())
    assert "provision_credentials: no AWS credentials were found" in flat, out
    assert "aws configure" in flat and "make demo" in flat, out
    assert run_owned(clients, run_name) == {}


def test_teardown_needs_a_run_or_ids_and_terminate_for_deletes(emulator_env):
    rc, out = run_playbook(emulator_env, "teardown.yml")
    assert rc != 0 and "say which run: -e run_name=NAME" in " ".join(out.split()), out
    rc, out = run_playbook(emulator_env, "teardown.yml", "run_name=ct-pytest-none", "teardown_delete_resources=true")
    assert rc != 0 and "teardown_delete_resources: true needs teardown_action: terminate" in " ".join(out.split()), out
