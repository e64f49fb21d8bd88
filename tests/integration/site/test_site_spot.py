"""Spot runs on the stand-in: interruptions from `standin.py interrupt`, checkpoints in the emulator's S3.

- interrupted mid-epoch (epoch 2, or 3 on a slow machine), the run relaunches by itself, resumes from S3 and ends with the same
  weights as an uninterrupted run; the notice's checkpoint reached S3 within the notice;
- interrupted again and again past max_restarts: a clear failure, the checkpoints stay, nothing runs;
- the controller killed, then the instance interrupted: the next site.yml run resumes from S3.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import boto3
import pytest

from site_helpers import BIN, DATA, REPO, run_instances, run_site, start_site

sys.path.insert(0, str(REPO / ".collections"))
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _prices as prices  # noqa: E402

import standin  # noqa: E402  (tests/standin, on the path from tests/conftest.py)

BUCKET = "ct-spot"
EPOCHS = 3
# Epochs of several seconds (one thread, 6,000 images), so that "during epoch 2" is a real moment; the third
# is the slack for a loaded machine, where the notice may land after epoch 2.
TRAIN_ARGS = ["--limit-train", "6000", "--limit-test", "200", "--threads", "1"]
SPOT = {"market": "spot", "s3_bucket": BUCKET, "epochs": EPOCHS, "train_args": TRAIN_ARGS,
        "teardown_action": "terminate", "train_checkpoint_poll_interval": 1}


def s3():
    return boto3.client("s3", region_name="us-east-1")


def ec2():
    return boto3.client("ec2", region_name="us-east-1")


def keys(prefix: str) -> set[str]:
    return {o["Key"][len(prefix):] for o in s3().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])}


def wait_for(what: str, check, proc: subprocess.Popen | None, log, timeout: float = 1200):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"site.yml ended (rc {proc.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:] if log else ''}")


def running(run_name: str, not_in=()) -> str | None:
    ids = [i["InstanceId"] for i in run_instances(run_name) if i["State"]["Name"] == "running" and i["InstanceId"] not in not_in]
    return ids[0] if ids else None


def interrupt(instance_id: str, notice: int) -> None:
    """`standin.py interrupt`, in this process: a new Python would take a second of a few-second epoch."""
    assert standin.cmd_interrupt(argparse.Namespace(instance_id=instance_id, notice=float(notice))) == 0


def live(run_name: str) -> list[str]:
    return [i["State"]["Name"] for i in run_instances(run_name) if i["State"]["Name"] not in ("terminated", "shutting-down")]


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory):
    """The same training, uninterrupted, with the same seed: the collection's trainer on the controller."""
    out = tmp_path_factory.mktemp("reference")
    subprocess.run([str(BIN / "python"), "train.py", "--data-dir", str(DATA), "--output-dir", str(out / "output"),
                    "--checkpoint-dir", str(out / "checkpoints"), "--epochs", str(EPOCHS), "--no-download", *TRAIN_ARGS],
                   cwd=REPO / "training", check=True, capture_output=True)
    return out / "output" / "model.pt"


def same_weights(a, b) -> bool:
    import torch

    left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_interrupted_mid_epoch_relaunches_and_ends_bit_identical(aws, standin, tmp_path, reference_weights):
    run_name, prefix = "spot-resume", "spot-resume/checkpoints/"
    s3().create_bucket(Bucket=BUCKET)
    log, summary = tmp_path / "site.log", tmp_path / "summary.json"
    proc = start_site(standin, run_name, tmp_path, log, summary_file=str(summary), **SPOT)
    try:
        first = wait_for("the first instance", lambda: running(run_name), proc, log)
        # Epoch 1's checkpoint in S3 means epoch 2 is under way.
        wait_for("epoch 1's checkpoint in S3", lambda: "checkpoint-0002-000000.pt" in keys(prefix), proc, log)
        interrupt(first, notice=30)
        assert proc.wait(timeout=900) == 0, log.read_text()[-5000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    record = json.loads(s3().get_object(Bucket=BUCKET, Key=f"{prefix}.cloudtrain/{first}.json")["Body"].read())
    print(f"notice to checkpoint in S3: {record['notice_to_s3_seconds']} s, work lost {record['work_lost_seconds']} s,"
          f" checkpoint {record['checkpoint']}")
    # The notice's own checkpoint: mid-epoch (not an epoch's end), in S3 and checked well within the notice.
    assert record["safe"] and re.fullmatch(r"checkpoint-000[23]-0*[1-9][0-9]*\.pt", record["checkpoint"]), record
    assert record["container_exit_code"] == 75 and record["notice_to_s3_seconds"] < 30, record

    result = json.loads(summary.read_text())
    host = result["instances"][0]
    assert result["outcome"] == "succeeded" and host["interruptions"] == 1 and host["restarts"] == 1, host
    assert host["resumed_from"] == record["checkpoint"], host
    history = json.loads((tmp_path / "artifacts" / run_name / "metrics.json").read_text())
    epoch_seconds = max(h["seconds"] for h in history.get("history", [])) if history.get("history") else 60
    assert host["work_lost_seconds"] <= epoch_seconds, (host, epoch_seconds)
    assert "spot interruption 1 of at most 3" in " ".join(out.split())
    assert same_weights(tmp_path / "artifacts" / run_name / "model.pt", reference_weights)
    assert live(run_name) == [], run_instances(run_name)
    # Both instances are billed, each at its zone's spot price as the spot price history gives it, and the
    # summary says what the run would have cost on demand.
    cost = result["cost_detail"]
    used = run_instances(run_name)
    assert sorted(c["instance_id"] for c in cost["instances"]) == sorted(i["InstanceId"] for i in used), cost
    for item, inst in zip(sorted(cost["instances"], key=lambda c: c["instance_id"]), sorted(used, key=lambda i: i["InstanceId"])):
        [quote] = [h for h in ec2().describe_spot_price_history(
            InstanceTypes=[inst["InstanceType"]], AvailabilityZone=inst["Placement"]["AvailabilityZone"],
            ProductDescriptions=["Linux/UNIX"])["SpotPriceHistory"] if h["AvailabilityZone"] == inst["Placement"]["AvailabilityZone"]][:1]
        assert (item["market"], item["price_source"], item["usd_per_hour"]) == ("spot", "spot price history", float(quote["SpotPrice"])), item
        on_demand = prices.ON_DEMAND_USD_PER_HOUR["us-east-1"][inst["InstanceType"]] * item["seconds"] / 3600
        assert abs(item["on_demand_usd"] - (on_demand + item["volume_usd"])) < 1e-5, item
    assert cost["on_demand_usd"] > cost["total_usd"], cost
    assert "on demand" in result["cost"], result["cost"]


def test_interrupted_past_max_restarts_fails_and_keeps_the_checkpoints(aws, standin, tmp_path):
    run_name, prefix = "spot-give-up", "spot-give-up/checkpoints/"
    s3().create_bucket(Bucket=BUCKET)
    # A checkpoint of an earlier attempt of this run: it must survive the failure.
    s3().put_object(Bucket=BUCKET, Key=prefix + "checkpoint-0001-000040.pt", Body=b"earlier")
    log = tmp_path / "site.log"
    proc = start_site(standin, run_name, tmp_path, log, max_restarts=1, **SPOT)
    try:
        seen = []
        for attempt in range(1, 3):  # each instance interrupted once it is reached, before any training
            instance_id = wait_for("an instance", lambda: running(run_name, not_in=seen), proc, log)
            wait_for(f"attempt {attempt} to reach its instance",
                     lambda: log.read_text().count("TASK [Install Docker]") >= attempt, proc, log)
            seen.append(instance_id)
            interrupt(instance_id, notice=2)
        assert proc.wait(timeout=600) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = " ".join(log.read_text().split())
    assert "spot: interrupted 2 time(s), more than max_restarts=1: giving up." in out, out[-4000:]
    assert "checkpoint-0001-000040.pt" in keys(prefix)
    assert len(run_instances(run_name)) == 2 and live(run_name) == [], run_instances(run_name)


def test_controller_killed_then_interrupted_resumes_on_the_next_run(aws, standin, tmp_path):
    run_name, prefix = "spot-orphan", "spot-orphan/checkpoints/"
    s3().create_bucket(Bucket=BUCKET)
    log = tmp_path / "first.log"
    proc = start_site(standin, run_name, tmp_path, log, **SPOT)
    try:
        first = wait_for("the first instance", lambda: running(run_name), proc, log)
        wait_for("epoch 1's checkpoint in S3", lambda: "checkpoint-0002-000000.pt" in keys(prefix), proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the controller dies; the training goes on
        proc.wait()
    interrupt(first, notice=30)
    wait_for("the interrupted instance to be gone", lambda: live(run_name) == [], None, log, timeout=180)

    result = run_site(standin, run_name, tmp_path, summary_file=str(tmp_path / "summary.json"), **SPOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    host = json.loads((tmp_path / "summary.json").read_text())["instances"][0]
    record = json.loads(s3().get_object(Bucket=BUCKET, Key=f"{prefix}.cloudtrain/{first}.json")["Body"].read())
    assert host["resumed_from"] == record["checkpoint"] and host["interruptions"] == 0, host
    train_log = (tmp_path / "artifacts" / run_name / "train.log").read_text()
    assert f"resuming from /workspace/checkpoints/{record['checkpoint']}" in train_log, train_log[:2000]
    assert live(run_name) == []
