"""Pure helpers behind the preflight's vCPU quota check and the summary's cost: no AWS call."""
from __future__ import annotations

import pytest

from ansible_collections.cloudtrain.ec2.plugins.module_utils import _prices as prices
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _vcpu_quotas as quotas


@pytest.mark.parametrize("instance_type, market, code", [
    ("g4dn.xlarge", "on-demand", "L-DB2E81BA"),
    ("g4dn.xlarge", "spot", "L-3819A6DF"),
    ("g5g.xlarge", "on-demand", "L-DB2E81BA"),
    ("vt1.3xlarge", "on-demand", "L-DB2E81BA"),
    ("p3.2xlarge", "on-demand", "L-417A185B"),
    ("p5.48xlarge", "spot", "L-7212CCBC"),
    ("m7i.large", "on-demand", "L-1216C47A"),
    ("t3.micro", "spot", "L-34B43A08"),
    ("c7g.large", "on-demand", "L-1216C47A"),
    ("inf2.xlarge", "on-demand", "L-1945791B"),
    ("trn1.2xlarge", "spot", "L-6B0D517C"),
    ("x2idn.16xlarge", "on-demand", "L-7295265B"),
])
def test_each_family_counts_against_its_own_quota(instance_type, market, code):
    assert quotas.quota_for(instance_type, market)["code"] == code


def test_a_family_outside_the_known_classes_has_no_quota_to_check():
    assert quotas.quota_for("hpc7g.4xlarge", "on-demand") is None


def test_running_vcpus_count_only_the_class_and_market():
    running = [
        {"InstanceType": "g4dn.xlarge", "State": {"Name": "running"}},
        {"InstanceType": "g5.2xlarge", "State": {"Name": "pending"}},
        {"InstanceType": "g4dn.xlarge", "State": {"Name": "running"}, "InstanceLifecycle": "spot"},
        {"InstanceType": "m5.large", "State": {"Name": "running"}},
    ]
    vcpus = {"g4dn.xlarge": 4, "g5.2xlarge": 8, "m5.large": 2}
    assert quotas.running_vcpus(running, vcpus, "g", "on-demand") == 12
    assert quotas.running_vcpus(running, vcpus, "g", "spot") == 4
    assert quotas.running_vcpus(running, vcpus, "standard", "on-demand") == 2


def test_a_quota_without_room_says_which_numbers_and_what_to_do():
    quota = {"code": "L-DB2E81BA", "name": "Running On-Demand G and VT instances", "value": 8.0}
    assert quotas.check_quota("g4dn.xlarge", 1, "on-demand", "us-east-1", {"g4dn.xlarge": 4}, quota, 4) is None
    message = quotas.check_quota("g4dn.xlarge", 2, "on-demand", "us-east-1", {"g4dn.xlarge": 4}, quota, 4)
    assert "2 x g4dn.xlarge needs 8 vCPUs" in message and "is 8 vCPUs with 4 in use, so 4 are free" in message
    assert "ask for at least 12" in message and "quotas/L-DB2E81BA" in message


def test_the_cost_is_the_table_price_times_the_seconds_plus_the_volume():
    cost = prices.run_cost("g4dn.xlarge", "us-east-1", 1800, 100, "gp3")
    assert cost["usd_per_hour"] == 0.526
    assert cost["instance_usd"] == pytest.approx(0.263)
    assert cost["volume_usd"] == pytest.approx(0.08 * 100 / 730 / 2, abs=1e-6)
    assert cost["total_usd"] == pytest.approx(cost["instance_usd"] + cost["volume_usd"])
    assert cost["on_demand_usd"] == cost["total_usd"]


def test_spot_is_priced_from_its_price_and_compared_with_on_demand():
    cost = prices.run_cost("g4dn.xlarge", "us-east-1", 3600, 0, "gp3", spot_price=0.2)
    assert (cost["market"], cost["instance_usd"], cost["on_demand_usd"]) == ("spot", 0.2, 0.526)


def test_ec2_bills_a_minute_at_least_and_unknown_prices_stay_unknown():
    assert prices.run_cost("m7i.large", "us-east-1", 5, 0, "gp3")["seconds"] == 60
    assert prices.run_cost("m7i.large", "ap-south-2", 600, 100, "gp3")["total_usd"] is None


def test_the_hard_limit_is_the_sooner_of_hours_and_budget():
    assert prices.hard_limit_seconds(2, 0, 0.5, 1) == 7200
    assert prices.hard_limit_seconds(2, 0.5, 0.5, 1) == 3600
    assert prices.hard_limit_seconds(0, 1.0, 0.5, 2) == 3600
    assert prices.hard_limit_seconds(0, 0, 0.5, 1) == 0
