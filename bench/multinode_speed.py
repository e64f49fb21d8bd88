"""Two stand-in nodes against one, at the same global batch: the scaling ratio of site.yml -e nodes=2.

    .venv/bin/python bench/multinode_speed.py [--epochs N] [--limit-train N] [--batch-size B]

Runs site.yml on the stand-in twice, each from the golden AMI (Docker and the training image
already there), on CPU instances (m7i.large), one thread per trainer process:
  2 nodes: -e nodes=2, one process per node (gloo over the loopback), --batch-size B on each rank;
  1 node:  one process with --batch-size 2B: the same global batch, the same samples per epoch.
Both with train_force (the training really runs) and teardown_action=terminate (nothing is left).
Throughput is the trainer's own, metrics.jsonl's samples_per_s (all ranks' samples over rank 0's
epoch time, first epoch left out when there are more: it carries the warm-up). The ratio is 2 nodes
over 1 node; 2.0 would be linear. The stand-in's nodes are containers on this one machine and share
its cores and memory bandwidth: the ratio says what the all-reduce and the second node cost here, not
what two EC2 instances would do (README.md, "Several instances", gives that on paper).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests" / "standin"))
import emulator  # noqa: E402  (tests/standin is plumbing, not a package)


def run_site(args, vars_file: Path, tmp: Path, nodes: int) -> dict:
    label = f"bench-nodes-{nodes}"
    summary_file, artifacts = tmp / f"summary-{label}.json", tmp / "artifacts"
    batch = args.batch_size * (2 // nodes)  # the same global batch in both runs
    train_args = ["--threads", "1", "--batch-size", str(batch)] + (
        ["--limit-train", str(args.limit_train)] if args.limit_train else [])
    golden = yaml.safe_load(vars_file.read_text()).get("standin_golden_ami_id")
    extra = {"run_name": label, "nodes": nodes, "epochs": args.epochs, "train_args": train_args, "train_force": True,
             "data_src": str(args.data), "artifacts_dir": str(artifacts), "summary_file": str(summary_file),
             "teardown_action": "terminate", "watchdog_minutes": 0, **({"ami_id": golden} if golden else {})}
    env = dict(os.environ, **emulator.CLIENT_ENV, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [str(BIN / "ansible-playbook"), "site.yml", "-e", "@tests/standin/demo.yml",
           "-e", "@" + str(vars_file), "-e", json.dumps(extra)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, check=False)
    wall = time.monotonic() - started
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if proc.returncode != 0 or summary.get("outcome") != "succeeded":
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        raise SystemExit(f"the {nodes}-node run failed: {summary.get('error')}")
    epochs = [json.loads(line) for line in (artifacts / label / "metrics.jsonl").read_text().splitlines() if line.strip()]
    metrics = json.loads((artifacts / label / "metrics.json").read_text())
    timed = epochs[1:] or epochs
    return {"wall": wall, "train_phase": float(summary["phase_seconds"].get("train", 0)),
            "container": float(summary["instances"][0]["seconds_in_training"]),
            "epoch_s": sum(e["train_seconds"] for e in timed) / len(timed),
            "samples_per_s": sum(e["samples_per_s"] for e in timed) / len(timed),
            "world_size": metrics["world_size"], "batch": batch, "accuracy": metrics["final_accuracy"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    parser.add_argument("--limit-train", type=int, default=0, help="train on the first N images only (0: all 8,000)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch per rank of the 2-node run (default 64)")
    args = parser.parse_args()
    args.data = REPO / ".cache" / "site-tests" / "data"
    python = str(BIN / "python")
    subprocess.run([python, "hacking/make_mnist_split.py", "--source", str(REPO.parent / "shared" / "data" / "mnist"),
                    "--dest", str(args.data)], cwd=REPO, check=True, capture_output=True)
    subprocess.run([python, "tests/standin/standin.py", "up"], cwd=REPO, check=True)
    vars_file = Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", REPO / ".cache" / "standin")) / "vars.yml"
    with tempfile.TemporaryDirectory(prefix="ct-bench-nodes-") as tmp:
        runs = {n: run_site(args, vars_file, Path(tmp), n) for n in (2, 1)}

    two, one = runs[2], runs[1]
    print(f"multi-node scaling on the stand-in ({args.epochs} epochs, "
          f"{args.limit_train or 'all 8000'} train images, global batch {2 * args.batch_size}, m7i.large, 1 thread/process,"
          f" {os.cpu_count()} cores on this machine)")
    print(f"  {'':<44}  {'1 node':>9}  {'2 nodes':>9}")
    rows = [("world size", "world_size", "{:9d}"), ("batch per rank", "batch", "{:9d}"),
            ("samples/s (trainer, all ranks)", "samples_per_s", "{:9.1f}"), ("seconds per epoch", "epoch_s", "{:9.2f}"),
            ("container run time, s", "container", "{:9.1f}"), ("site.yml train phase, s", "train_phase", "{:9.1f}"),
            ("site.yml wall time, s", "wall", "{:9.1f}"), ("final accuracy", "accuracy", "{:9.4f}")]
    for title, key, fmt in rows:
        print(f"  {title:<44}  {fmt.format(one[key])}  {fmt.format(two[key])}")
    print(f"scaling ratio (2-node / 1-node samples/s): {two['samples_per_s'] / one['samples_per_s']:.2f} (2.00 is linear);"
          f" wall-time ratio (1-node / 2-node): {one['wall'] / two['wall']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
