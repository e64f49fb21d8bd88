"""Bring a 1 GB file home from a stand-in instance with ansible.builtin.fetch and with one
ansible.posix.synchronize (rsync) pull, side by side in one run, and print the ratios.

    .venv/bin/python bench/fetch_speed.py [--size-mb 1024]

It starts the stand-in (`standin.py up`), provisions an instance of its own (run name bench-fetch,
reached over SSH as every run is) and stops it at the end; the timings come from the JSON
callback, one task each.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "standin"))

import emulator  # noqa: E402  (tests/standin is plumbing, not a package)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    python = str(REPO / ".venv" / "bin" / "python")
    subprocess.run([python, str(REPO / "tests" / "standin" / "standin.py"), "up"], check=True)
    state = Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", REPO / ".cache" / "standin"))
    with tempfile.TemporaryDirectory(prefix="fetch-bench-") as home:
        env = dict(os.environ, **emulator.CLIENT_ENV, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", FETCH_BENCH_DIR=home)
        extra = {"run_name": "bench-fetch", "instance_type": "m7i.large", "ssh_cidrs": ["127.0.0.1/32"],
                 "size_mb": args.size_mb}
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), str(REPO / "bench" / "fetch_speed.yml"),
                               "-e", "@" + str(state / "vars.yml"), "-e", json.dumps(extra)],
                              cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=1800)
        if proc.returncode != 0:
            sys.exit(f"the playbook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
        seconds = {}
        play = next(p for p in report["plays"] if p["play"]["name"] == "Bring a large file home both ways")
        for task in play["tasks"]:
            duration = task["task"]["duration"]
            seconds[task["task"]["name"]] = _seconds(duration["end"]) - _seconds(duration["start"])
        ways = ("fetch", "fetch-become", "synchronize", "synchronize-become")
        sizes = [(Path(home) / way / "model.bin").stat().st_size for way in ways]
    if sizes != [args.size_mb << 20] * len(ways):
        sys.exit(f"sizes differ from {args.size_mb} MB: {dict(zip(ways, sizes))}")
    mb = args.size_mb
    print(f"connection: ssh (the stand-in's instance), file: {mb} MB")
    for task in ("Fetch it", "Fetch it as root", "Synchronize it", "Synchronize it as root"):
        print(f"{task:24} {seconds[task]:7.1f} s  {mb / seconds[task]:7.0f} MB/s")
    print(f"synchronize/fetch as the login user: {seconds['Fetch it'] / seconds['Synchronize it']:.2f}x as fast")
    print(f"synchronize/fetch as root:           {seconds['Fetch it as root'] / seconds['Synchronize it as root']:.2f}x as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
