"""A run with s3_bucket: the instance uploads the results to S3 with its instance profile's
credentials (from its metadata service) through a current boto3, and the emulator holds them.
On the plain AMI (golden=False): the site test of a real first run, Docker install and image pull.
The same run's summary gives its cost: the shipped price table times the seconds the instance ran."""
from __future__ import annotations

import json
import re
import sys
import time

import boto3

from site_helpers import REPO, instance_states, run_site

sys.path.insert(0, str(REPO / ".collections"))
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _prices as prices  # noqa: E402


def test_results_reach_s3_and_the_summary_gives_the_cost(aws, standin, tmp_path):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="ct-site-results")
    summary_file = tmp_path / "summary.json"
    started = time.time()
    result = run_site(standin, "s3-results", tmp_path, golden=False, s3_bucket="ct-site-results", summary_file=str(summary_file))
    wall = time.time() - started
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # The plain AMI's first run pulls the image itself (on the golden AMI this task reports ok).
    assert re.search(r"TASK \[cloudtrain\.ec2\.train : Pull the training image\] \*+\n(?:.*\n)?changed: \[", out), out[-3000:]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="ct-site-results", Prefix="s3-results/results/")["Contents"]}
    assert {"s3-results/results/metrics.json", "s3-results/results/train.log"} <= keys, keys
    local = (tmp_path / "artifacts" / "s3-results" / "metrics.json").read_bytes()
    assert s3.get_object(Bucket="ct-site-results", Key="s3-results/results/metrics.json")["Body"].read() == local
    assert instance_states("s3-results") == ["stopped"]

    summary = json.loads(summary_file.read_text())
    [cost] = summary["cost_detail"]["instances"]
    ec2 = boto3.client("ec2", region_name="us-east-1")
    [inst] = [i for r in ec2.describe_instances(InstanceIds=[cost["instance_id"]])["Reservations"] for i in r["Instances"]]
    # Measured: from the launch (AWS's launch time) to the end of the teardown, inside the play's wall time.
    assert summary["phase_seconds"]["train"] < cost["seconds"] < wall, (cost, summary["phase_seconds"], wall)
    assert inst["LaunchTime"].timestamp() >= started - 1
    price = prices.ON_DEMAND_USD_PER_HOUR["us-east-1"]["m7i.large"]
    volume = prices.VOLUME_USD_PER_GIB_MONTH["us-east-1"]["gp3"] * 100 / 730
    assert (cost["instance_type"], cost["market"], cost["usd_per_hour"]) == ("m7i.large", "on-demand", price)
    assert abs(cost["instance_usd"] - price * cost["seconds"] / 3600) < 1e-6
    assert abs(cost["volume_usd"] - volume * cost["seconds"] / 3600) < 1e-6
    assert abs(summary["cost_detail"]["total_usd"] - (price + volume) * cost["seconds"] / 3600) < 1e-5
    assert summary["cost"].startswith("%.4f USD: m7i.large on-demand, %s s at %s USD/h" % (
        summary["cost_detail"]["total_usd"], cost["seconds"], price)), summary["cost"]
    assert prices.PRICE_DATE in cost["price_source"]
