"""Bring a 1 GB file home from the stand-in instance with ansible.builtin.fetch and with one
ansible.posix.synchronize (rsync) pull, side by side in one run, and print the ratio.

    .venv/bin/python bench/fetch_speed.py [--size-mb 1024] [--vars .cache/standin/vars.yml]

The instance is the one the stand-in's vars file maps the provisioned host to (`standin.py up`
first); the timings come from the JSON callback, one task each.
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


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--vars", type=Path, default=REPO / ".cache" / "standin" / "vars.yml")
    args = parser.parse_args()
    host_vars = json.loads(args.vars.read_text().lstrip("-\n"))["provision_host_vars"]
    with tempfile.TemporaryDirectory(prefix="fetch-bench-") as home:
        inventory = Path(home) / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": {"instance": host_vars}}}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
                   FETCH_BENCH_DIR=home)
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory),
                               str(REPO / "bench" / "fetch_speed.yml"), "-e", f"size_mb={args.size_mb}"],
                              env=env, capture_output=True, text=True, check=False, timeout=1800)
        if proc.returncode != 0:
            sys.exit(f"the playbook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
        seconds = {}
        for task in report["plays"][0]["tasks"]:
            duration = task["task"]["duration"]
            seconds[task["task"]["name"]] = _seconds(duration["end"]) - _seconds(duration["start"])
        ways = ("fetch", "fetch-become", "synchronize", "synchronize-become")
        sizes = [(Path(home) / way / "model.bin").stat().st_size for way in ways]
    if sizes != [args.size_mb << 20] * len(ways):
        sys.exit(f"sizes differ from {args.size_mb} MB: {dict(zip(ways, sizes))}")
    mb = args.size_mb
    print(f"connection: {host_vars.get('ansible_connection', 'ssh')}, file: {mb} MB")
    for task in ("Fetch it", "Fetch it as root", "Synchronize it", "Synchronize it as root"):
        print(f"{task:24} {seconds[task]:7.1f} s  {mb / seconds[task]:7.0f} MB/s")
    print(f"synchronize/fetch as the login user: {seconds['Fetch it'] / seconds['Synchronize it']:.2f}x as fast")
    print(f"synchronize/fetch as root:           {seconds['Fetch it as root'] / seconds['Synchronize it as root']:.2f}x as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
