"""The checkpoint agent (roles/train/files/checkpoint_agent.py) against the emulator's S3: uploads
checked there, a restore checked against the manifest, and failures that are said and delete nothing.
The interruption path (the notice, the container stopped) runs on the stand-in: tests/integration/site/test_site_spot.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

REPO = Path(__file__).resolve().parents[3]
AGENT = REPO / "roles" / "train" / "files" / "checkpoint_agent.py"
sys.path.insert(0, str(AGENT.parent))
import checkpoint_agent  # noqa: E402

BUCKET, PREFIX = "ct-agent", "run/checkpoints/"


def write(path: Path, data: bytes, age: float = 10.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    past = time.time() - age
    os.utime(path, (past, past))


def agent(tmp_path: Path, bucket: str = BUCKET) -> checkpoint_agent.Agent:
    (tmp_path / "state").mkdir(exist_ok=True)
    args = SimpleNamespace(checkpoint_dir=str(tmp_path / "ck"), state_dir=str(tmp_path / "state"), bucket=bucket,
                           prefix=PREFIX, region="us-east-1", container="none", grace=1, poll=0.1)
    return checkpoint_agent.Agent(args)


def objects() -> dict[str, bytes]:
    s3 = boto3.client("s3", region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])
    return {o["Key"][len(PREFIX):]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


@pytest.fixture(autouse=True)
def no_metadata(monkeypatch):
    """No instance here: the agent's metadata look-ups must not leave loopback."""
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def bucket(aws):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)


def test_sync_uploads_checks_and_prunes_after_the_manifest(bucket, tmp_path):
    big = os.urandom(checkpoint_agent.PART_SIZE + 1000)  # two parts: the multipart checksum path
    write(tmp_path / "ck" / "checkpoint-0001-000000.pt", b"one")
    write(tmp_path / "ck" / "sub" / "big.pt", big)
    write(tmp_path / "ck" / ".tmp-half.pt", b"a temporary file is never uploaded")
    a = agent(tmp_path)
    assert a.sync("sync")
    manifest = json.loads(objects()[".cloudtrain/manifest.json"])
    assert set(manifest["files"]) == {"checkpoint-0001-000000.pt", "sub/big.pt"}
    assert objects()["sub/big.pt"] == big
    # The trainer keeps the newest only: the old object goes, after the new manifest.
    (tmp_path / "ck" / "checkpoint-0001-000000.pt").unlink()
    write(tmp_path / "ck" / "checkpoint-0002-000000.pt", b"two")
    assert a.sync("sync")
    stored = objects()
    assert "checkpoint-0001-000000.pt" not in stored and stored["checkpoint-0002-000000.pt"] == b"two"
    state = json.loads((tmp_path / "state" / "checkpoint-agent.json").read_text())
    assert state["safe"] and state["newest"] == "checkpoint-0002-000000.pt"
    # A file still being written in place waits for the next poll.
    write(tmp_path / "ck" / "checkpoint-0003-000000.pt", b"three", age=0)
    assert a.sync("sync") and "checkpoint-0003-000000.pt" not in objects()


def test_restore_fills_an_empty_folder_and_refuses_a_damaged_object(bucket, tmp_path):
    write(tmp_path / "ck" / "checkpoint-0002-000100.pt", b"state of epoch 2")
    assert agent(tmp_path).sync("interruption", settled=False)
    fresh = tmp_path / "fresh"
    run = [sys.executable, str(AGENT), "restore", "--checkpoint-dir", str(fresh), "--bucket", BUCKET,
           "--prefix", PREFIX, "--region", "us-east-1"]
    restored = json.loads(subprocess.run(run, check=True, capture_output=True, text=True).stdout)
    assert restored["restored"] and restored["newest"] == "checkpoint-0002-000100.pt" and restored["reason"] == "interruption"
    assert (fresh / "checkpoint-0002-000100.pt").read_bytes() == b"state of epoch 2"
    # A folder that already holds checkpoints is left alone.
    again = json.loads(subprocess.run(run, check=True, capture_output=True, text=True).stdout)
    assert again == {"restored": False, "reason": f"{fresh} already holds checkpoints"}
    # An object that no longer matches the manifest is not resumed from.
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=BUCKET, Key=PREFIX + "checkpoint-0002-000100.pt",
                                                           Body=b"state of epoch 3")
    damaged = subprocess.run([*run[:4], str(tmp_path / "other"), *run[5:]], capture_output=True, text=True, check=False)
    assert damaged.returncode == 2 and "does not match its manifest" in damaged.stderr
    assert not list((tmp_path / "other").glob("*.pt"))


def test_a_missing_bucket_is_said_and_nothing_is_deleted(aws, tmp_path, capsys):
    write(tmp_path / "ck" / "checkpoint-0001-000000.pt", b"one")
    a = agent(tmp_path, bucket="ct-no-such-bucket")
    assert not a.sync("sync")
    said = capsys.readouterr().out
    assert "FAILED, the checkpoints are NOT safe in S3" in said and "NoSuchBucket" in said
    state = json.loads((tmp_path / "state" / "checkpoint-agent.json").read_text())
    assert state["safe"] is False and "NoSuchBucket" in state["error"]
    assert (tmp_path / "ck" / "checkpoint-0001-000000.pt").read_bytes() == b"one"
    # wait reports the run as not safe at once instead of waiting for its timeout.
    waited = subprocess.run([sys.executable, str(AGENT), "wait", "--checkpoint-dir", str(tmp_path / "ck"),
                             "--state-dir", str(tmp_path / "state"), "--timeout", "60"],
                            check=True, capture_output=True, text=True, timeout=30)
    assert json.loads(waited.stdout)["pending"] == ["checkpoint-0001-000000.pt"]


def test_a_failed_upload_keeps_the_last_safe_checkpoint(bucket, tmp_path, monkeypatch):
    write(tmp_path / "ck" / "checkpoint-0001-000000.pt", b"one")
    a = agent(tmp_path)
    assert a.sync("sync")
    (tmp_path / "ck" / "checkpoint-0001-000000.pt").unlink()
    write(tmp_path / "ck" / "checkpoint-0002-000000.pt", b"two")

    def refused(path, rel):
        raise RuntimeError(f"upload of {rel} refused")

    monkeypatch.setattr(a.store, "upload_checked", refused)
    assert not a.sync("sync")
    stored = objects()
    # The old checkpoint and its manifest stay: the newest safe state is still restorable.
    assert stored["checkpoint-0001-000000.pt"] == b"one" and "checkpoint-0002-000000.pt" not in stored
    assert json.loads(stored[".cloudtrain/manifest.json"])["newest"] == "checkpoint-0001-000000.pt"
