"""A run with s3_bucket: the instance uploads the results to S3 with its instance profile's
credentials (from its metadata service) through a current boto3, and the emulator holds them.
On the plain AMI (golden=False): the site test of a real first run, Docker install and image pull."""
from __future__ import annotations

import re

import boto3

from site_helpers import instance_states, run_site


def test_results_reach_s3(aws, standin, tmp_path):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="ct-site-results")
    result = run_site(standin, "s3-results", tmp_path, golden=False, s3_bucket="ct-site-results")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # The plain AMI's first run pulls the image itself (on the golden AMI this task reports ok).
    assert re.search(r"TASK \[cloudtrain\.ec2\.train : Pull the training image\] \*+\n(?:.*\n)?changed: \[", out), out[-3000:]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="ct-site-results", Prefix="s3-results/results/")["Contents"]}
    assert {"s3-results/results/metrics.json", "s3-results/results/train.log"} <= keys, keys
    local = (tmp_path / "artifacts" / "s3-results" / "metrics.json").read_bytes()
    assert s3.get_object(Bucket="ct-site-results", Key="s3-results/results/metrics.json")["Body"].read() == local
    assert instance_states("s3-results") == ["stopped"]
