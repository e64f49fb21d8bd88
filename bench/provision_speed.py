"""Time the provision role's first run and its idempotent re-run against the local AWS emulator.

Each AWS module task pays 1.5-2 s of start-up, so the number of tasks that actually run is the
cost: the script prints, side by side, the wall time of both runs (and of the teardown and its
no-op re-run), how many tasks ran, how many of them were AWS modules, and the slowest tasks.

    .venv/bin/python bench/provision_speed.py [--instance-type m5.large] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "standin"))

import emulator  # noqa: E402


def ensure_emulator() -> None:
    try:
        socket.create_connection(("127.0.0.1", emulator.PORT), 2).close()
    except OSError:
        emulator.start()


def playbook(env: dict, name: str, extra: dict) -> dict:
    """Run one playbook with the JSON callback; return wall time and per-task facts."""
    cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook"), str(REPO / "playbooks" / name), "-e", json.dumps(extra)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{name} failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    tasks = []
    for play in report["plays"]:
        for task in play["tasks"]:
            result = task["hosts"].get("localhost", {})
            if result.get("skipped") and not result.get("results"):
                continue
            duration = task["task"]["duration"]
            tasks.append({
                "name": task["task"]["name"],
                "action": result.get("action", ""),
                "changed": bool(result.get("changed")),
                "seconds": _seconds(duration["end"]) - _seconds(duration["start"]),
            })
    return {"wall": wall, "tasks": tasks, "stats": report["stats"]["localhost"]}


def _seconds(stamp: str) -> float:
    from datetime import datetime
    return datetime.strptime(stamp.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def summary(label: str, run: dict) -> str:
    aws = [t for t in run["tasks"] if t["action"].startswith(("amazon.aws.", "community.aws."))]
    return (f"{label:<26} {run['wall']:7.1f} s   tasks run {len(run['tasks']):2d}   AWS modules {len(aws):2d}   "
            f"changed {run['stats']['changed']:2d}   AWS module time {sum(t['seconds'] for t in aws):6.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instance-type", default="m5.large")
    parser.add_argument("--keep", action="store_true", help="leave the run's resources in the emulator")
    args = parser.parse_args()

    ensure_emulator()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emulator.CLIENT_ENV)
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_DEPRECATION_WARNINGS="false")
    run_name = f"ct-bench-provision-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="ct-provision-bench-") as keys:
        provision = {"run_name": run_name, "instance_type": args.instance_type, "ssh_cidrs": ["203.0.113.7/32"],
                     "wait_for_connection": False, "provision_key_dir": keys}
        teardown = {"run_name": run_name, "teardown_action": "terminate"}
        first = playbook(env, "provision.yml", provision)
        again = playbook(env, "provision.yml", provision)
        results = [("provision, first run", first), ("provision, re-run", again)]
        if not args.keep:
            results.append(("teardown terminate+delete", playbook(env, "teardown.yml", teardown)))
            results.append(("teardown, re-run", playbook(env, "teardown.yml", teardown)))

    print(f"emulator {emulator.URL}, instance type {args.instance_type}, run {run_name}")
    for label, run in results:
        print(summary(label, run))
    print(f"re-run / first run: {again['wall'] / first['wall']:.2f}")
    print("slowest tasks of the first run:")
    for task in sorted(first["tasks"], key=lambda t: -t["seconds"])[:8]:
        print(f"  {task['seconds']:6.2f} s  {task['action'] or '-':<34} {task['name'][:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
