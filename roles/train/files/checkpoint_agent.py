"""Keep a training run's checkpoints safe in S3, on the instance, whatever happens to the controller.

    checkpoint_agent.py watch --container NAME --checkpoint-dir DIR --state-dir DIR --bucket B --prefix P
    checkpoint_agent.py restore --checkpoint-dir DIR --bucket B --prefix P
    checkpoint_agent.py wait --checkpoint-dir DIR --state-dir DIR [--timeout S]

watch (a systemd service armed before the training starts) does two things, every --poll seconds:
- it uploads the checkpoint folder to s3://B/P when a file in it changed, checks each object there (size
  and SHA-256), and only then writes the manifest P.cloudtrain/manifest.json that says which files make
  the newest safe checkpoint; objects of files the trainer has since removed are deleted after that, never
  before. A failed upload is logged and retried; it deletes nothing.
- it asks the instance metadata (IMDSv2) for a spot interruption notice. On one it stops the training
  container with a grace period (SIGTERM: the trainer saves a checkpoint and exits), uploads and checks
  what the trainer saved, and records the interruption and its timings in P.cloudtrain/<instance id>.json,
  all inside the two-minute notice. A rebalance recommendation only triggers an immediate upload.
Its state (what is safe in S3, failures, the interruption) is also in DIR/checkpoint-agent.json.

restore puts the newest safe checkpoint from S3 into an empty checkpoint folder (a fresh instance), each
file checked against the manifest, and prints what it restored as JSON.

wait (after the training) waits until every file of the checkpoint folder is safe in S3, or an upload
failed, or --timeout passed, and prints the agent's state as JSON with "pending": the files not yet safe.

It uses the instance profile's credentials through boto3's usual chain, never a key.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

# Parts of this size (S3 checks each part's SHA-256 as it arrives); a part is also the unit of parallelism.
PART_SIZE = 64 * 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=10)
META = ".cloudtrain/"  # the agent's own objects under the prefix, never restored as checkpoint files
SETTLE_SECONDS = 2.0   # a file written in place (not renamed into place) is left alone until it is this old


def now() -> float:
    return round(time.time(), 3)


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} checkpoint-agent: {message}", flush=True)


# --------------------------------------------------------------------------- files and checksums

def local_files(folder: Path) -> dict[str, dict]:
    """relative path -> size and mtime of the checkpoint folder's files (hidden ones, temporaries, left out)."""
    found = {}
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            stat = path.stat()
            found[rel] = {"size": stat.st_size, "mtime": stat.st_mtime}
    return found


def checksums(path: Path) -> tuple[str, str]:
    """(hex SHA-256 of the whole file, the ChecksumSHA256 S3 shows for it as uploaded with TRANSFER)."""
    whole, parts = hashlib.sha256(), []
    with path.open("rb") as handle:
        while chunk := handle.read(PART_SIZE):
            whole.update(chunk)
            parts.append(hashlib.sha256(chunk).digest())
    if len(parts) <= 1 or path.stat().st_size < PART_SIZE:  # one PutObject: the object's own checksum
        return whole.hexdigest(), base64.b64encode(whole.digest()).decode()
    # Multipart: S3 reports the checksum of the parts' checksums (followed by "-<part count>").
    return whole.hexdigest(), base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode()


# --------------------------------------------------------------------------- the instance's metadata

class Metadata:
    """IMDSv2: a session token, then GETs; None for a path that is not there (404)."""

    def __init__(self):
        base = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254/")
        self.base = base.rstrip("/") + "/latest/"
        self.token, self.token_until = "", 0.0

    def _request(self, path: str, method: str = "GET", headers: dict | None = None) -> str | None:
        request = urllib.request.Request(self.base + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def get(self, path: str) -> str | None:
        if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":  # botocore's switch, honoured too
            raise OSError("AWS_EC2_METADATA_DISABLED=true")
        if time.time() > self.token_until:
            self.token = self._request("api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}) or ""
            self.token_until = time.time() + 21000
        return self._request(path, headers={"X-aws-ec2-metadata-token": self.token})


# --------------------------------------------------------------------------- S3

class Store:
    """The run's checkpoint prefix in S3."""

    def __init__(self, bucket: str, prefix: str, region: str | None):
        self.bucket, self.prefix = bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.s3 = boto3.client("s3", region_name=region or None)

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def upload_checked(self, path: Path, rel: str) -> dict:
        """Upload one file and check it in S3; its manifest entry. Raises on any difference."""
        sha256, s3_checksum = checksums(path)
        size = path.stat().st_size
        key = self.prefix + rel
        self.s3.upload_file(str(path), self.bucket, key, Config=TRANSFER,
                            ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha256}})
        head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        if head["ContentLength"] != size:
            raise RuntimeError(f"{self.url(rel)} has {head['ContentLength']} bytes, the file {size}")
        in_s3 = head.get("ChecksumSHA256", s3_checksum).split("-")[0]
        if in_s3 != s3_checksum or head.get("Metadata", {}).get("sha256") != sha256:
            raise RuntimeError(f"{self.url(rel)}: checksum differs from the file's")
        return {"size": size, "sha256": sha256}

    def get_json(self, key: str) -> dict | None:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def manifest_if_readable(self) -> dict | None:
        try:
            return self.get_json(META + "manifest.json")
        except Exception as exc:  # noqa: BLE001 (a missing bucket is reported by the first upload)
            log(f"no manifest readable in {self.url(META)}: {exc}")
            return None

    def put_json(self, key: str, doc: dict) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=json.dumps(doc, indent=1).encode(),
                           ContentType="application/json")

    def keys(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        return [o["Key"][len(self.prefix):] for page in pages for o in page.get("Contents", [])]


# --------------------------------------------------------------------------- watch

class Agent:
    def __init__(self, args):
        self.args = args
        self.folder = Path(args.checkpoint_dir)
        self.state_file = Path(args.state_dir) / "checkpoint-agent.json"
        self.store = Store(args.bucket, args.prefix, args.region)
        self.metadata = Metadata()
        self.instance_id = self._instance_id()
        self.uploaded: dict[str, dict] = {}   # rel -> {size, mtime, sha256} as in S3 now
        self.retry_at = 0.0
        self.rebalance_seen = False
        self.state = {"instance_id": self.instance_id, "container": args.container, "checkpoints": self.store.url(),
                      "safe": None, "newest": None, "newest_mtime": None, "synced_at": None, "uploads": 0,
                      "error": None, "interruption": None, "started_at": now()}

    def _instance_id(self) -> str:
        try:
            return self.metadata.get("meta-data/instance-id") or "unknown"
        except OSError as exc:
            log(f"the instance metadata does not answer ({exc}): interruption notices cannot be seen")
            return "unknown"

    def save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1) + "\n")
        tmp.replace(self.state_file)

    def sync(self, reason: str, settled: bool = True) -> bool:
        """Upload what changed, then the manifest, then delete what is gone. True when S3 is up to date."""
        files = local_files(self.folder)
        if settled:  # files still being written in place wait for the next poll
            files = {rel: f for rel, f in files.items() if time.time() - f["mtime"] >= SETTLE_SECONDS}
        changed = [rel for rel, f in files.items()
                   if (self.uploaded.get(rel) or {}).get("mtime") != f["mtime"]
                   or self.uploaded[rel]["size"] != f["size"]]
        gone = [rel for rel in self.uploaded if rel not in local_files(self.folder)]
        if not changed and not gone:
            return True
        try:
            entries = {rel: dict(self.uploaded[rel]) for rel in files if rel not in changed and rel in self.uploaded}
            for rel in changed:
                entries[rel] = {**self.store.upload_checked(self.folder / rel, rel), "mtime": files[rel]["mtime"]}
                self.state["uploads"] += 1
            newest = max(entries, key=lambda rel: entries[rel]["mtime"]) if entries else None
            self.store.put_json(META + "manifest.json", {
                "files": entries, "newest": newest, "newest_mtime": entries[newest]["mtime"] if newest else None,
                "saved_at": now(), "instance_id": self.instance_id, "reason": reason})
            # Only now that the manifest names the new files: remove the objects of the files the trainer removed.
            for rel in gone:
                self.store.s3.delete_object(Bucket=self.store.bucket, Key=self.store.prefix + rel)
        except Exception as exc:  # noqa: BLE001 (botocore, network and file errors: all mean "not safe")
            self.state.update(safe=False, error=f"{type(exc).__name__}: {exc}")
            self.retry_at = time.time() + 10
            log(f"checkpoint upload to {self.store.url()} FAILED, the checkpoints are NOT safe in S3: "
                f"{self.state['error']}; nothing was deleted, trying again in 10 s")
            self.save_state()
            return False
        self.uploaded = entries
        self.state["files"] = {rel: {"size": e["size"], "mtime": e["mtime"]} for rel, e in entries.items()}
        self.state.update(safe=True, error=None, newest=newest, synced_at=now(),
                          newest_mtime=entries[newest]["mtime"] if newest else None)
        log(f"{reason}: {len(changed)} file(s) uploaded and checked, newest {newest}, in {self.store.url()}")
        self.save_state()
        return True

    def container(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)

    def on_notice(self, notice: dict) -> None:
        seen = now()
        log(f"spot interruption notice: {notice.get('action')} at {notice.get('time')}; stopping "
            f"{self.args.container} (grace {self.args.grace} s) and saving its checkpoint")
        record = {"instance_id": self.instance_id, "notice": notice, "notice_seen_at": seen}
        self.state["interruption"] = record
        stop = self.container("stop", "--time", str(self.args.grace), self.args.container)
        inspect = self.container("inspect", "--format", "{{.State.ExitCode}}", self.args.container)
        record.update(stopped_at=now(), container_exit_code=int(inspect.stdout) if inspect.stdout.strip().isdigit()
                      else None, container_stop=stop.stderr.strip() or "stopped")
        for attempt in range(3):  # the window is short: retry at once, not at the next poll
            if self.sync("interruption", settled=False):
                break
            log(f"upload attempt {attempt + 1} of 3 failed")
        record.update(safe=self.state["safe"], error=self.state["error"], checkpoint=self.state["newest"],
                      checkpoint_mtime=self.state["newest_mtime"], in_s3_at=now())
        record["notice_to_s3_seconds"] = round(record["in_s3_at"] - seen, 3)
        record["stop_seconds"] = round(record["stopped_at"] - seen, 3)  # the trainer's save and exit
        record["upload_seconds"] = round(record["in_s3_at"] - record["stopped_at"], 3)
        # Training done after the checkpoint is done again: none when the trainer saved on the notice,
        # else everything from its last checkpoint until the container stopped.
        mtime = record["checkpoint_mtime"]
        record["work_lost_seconds"] = (None if mtime is None else 0.0 if mtime >= seen
                                       else round(record["stopped_at"] - mtime, 3))
        logs = self.container("logs", self.args.container)
        try:
            self.store.s3.put_object(Bucket=self.store.bucket, Key=f"{self.store.prefix}{META}{self.instance_id}-train.log",
                                     Body=(logs.stdout + logs.stderr).encode())
            self.store.put_json(f"{META}{self.instance_id}.json", record)
        except Exception as exc:  # noqa: BLE001
            log(f"could not record the interruption in {self.store.url(META)}: {exc}")
        log(f"interruption handled: checkpoint {record['checkpoint']} "
            f"{'safe' if record['safe'] else 'NOT safe'} in S3 {record['notice_to_s3_seconds']} s after the notice")
        self.save_state()

    def poll_notices(self) -> None:
        try:
            action = self.metadata.get("meta-data/spot/instance-action")
            rebalance = None if self.rebalance_seen else self.metadata.get("meta-data/events/recommendations/rebalance")
        except (OSError, ValueError) as exc:
            log(f"instance metadata: {exc}")
            return
        if action:
            self.on_notice(json.loads(action))
        elif rebalance:
            self.rebalance_seen = True
            log(f"rebalance recommendation ({rebalance.strip()}): uploading the checkpoints now")
            self.sync("rebalance", settled=False)

    def run(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.store.manifest_if_readable()
        # Files already in S3 (a restored checkpoint, or an agent restarted on a stopped and started instance).
        if manifest:
            local = local_files(self.folder)
            self.uploaded = {rel: e for rel, e in manifest["files"].items()
                             if rel in local and local[rel]["size"] == e["size"] and local[rel]["mtime"] == e["mtime"]}
        log(f"watching {self.folder} -> {self.store.url()} and the metadata of {self.instance_id}")
        self.save_state()
        while self.state["interruption"] is None:
            self.poll_notices()
            if self.state["interruption"] is None and time.time() >= self.retry_at:
                self.sync("sync")
            time.sleep(self.args.poll)
        while True:  # the notice is handled: wait for the end, or for a new boot (a stopped spot instance)
            time.sleep(3600)


# --------------------------------------------------------------------------- restore

def restore(args) -> int:
    folder = Path(args.checkpoint_dir)
    store = Store(args.bucket, args.prefix, args.region)
    if local_files(folder):
        print(json.dumps({"restored": False, "reason": f"{folder} already holds checkpoints"}))
        return 0
    manifest = store.get_json(META + "manifest.json")
    if not manifest or not manifest.get("files"):
        print(json.dumps({"restored": False, "reason": f"no checkpoint in {store.url()}"}))
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    for rel, entry in manifest["files"].items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".restore-")
        os.close(fd)
        try:
            store.s3.download_file(store.bucket, store.prefix + rel, tmp, Config=TRANSFER)
            sha256 = checksums(Path(tmp))[0]
            if Path(tmp).stat().st_size != entry["size"] or sha256 != entry["sha256"]:
                print(f"error: {store.url(rel)} does not match its manifest (size or SHA-256): not resuming from it",
                      file=sys.stderr)
                return 2
            os.utime(tmp, (entry["mtime"], entry["mtime"]))  # the agent then sees it as already in S3
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    print(json.dumps({"restored": True, "files": len(manifest["files"]), "newest": manifest["newest"],
                      "newest_mtime": manifest["newest_mtime"], "saved_at": manifest["saved_at"],
                      "saved_by": manifest["instance_id"], "reason": manifest["reason"],
                      "bytes": sum(e["size"] for e in manifest["files"].values()), "from": store.url()}))
    return 0


def wait(args) -> int:
    state_file, deadline = Path(args.state_dir) / "checkpoint-agent.json", time.time() + args.timeout
    while True:
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {"safe": None, "error": f"the agent has written no state in {state_file}"}
        synced = state.get("files") or {}
        state["pending"] = sorted(rel for rel, f in local_files(Path(args.checkpoint_dir)).items()
                                  if synced.get(rel) != {"size": f["size"], "mtime": f["mtime"]})
        if not state["pending"] or state.get("safe") is False or time.time() >= deadline:
            state.pop("files", None)
            print(json.dumps(state))
            return 0
        time.sleep(1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("watch", "restore", "wait"):
        p = sub.add_parser(name)
        p.add_argument("--checkpoint-dir", required=True)
        if name == "wait":
            p.add_argument("--state-dir", required=True)
            p.add_argument("--timeout", type=float, default=60.0)
            continue
        p.add_argument("--bucket", required=True)
        p.add_argument("--prefix", default="")
        p.add_argument("--region", default="")
        if name == "watch":
            p.add_argument("--container", required=True, help="the training container to stop on a notice")
            p.add_argument("--state-dir", required=True)
            p.add_argument("--grace", type=int, default=60, help="seconds between SIGTERM and SIGKILL")
            p.add_argument("--poll", type=float, default=2.0)
    args = parser.parse_args(argv)
    return {"watch": lambda: Agent(args).run(), "restore": lambda: restore(args), "wait": lambda: wait(args)}[args.cmd]()


if __name__ == "__main__":
    sys.exit(main())
