"""Time the local demo phase by phase and print the orchestration overhead.

    .venv/bin/python bench/demo_phases.py [--epochs N] [--limit-train N]

What it does, timed one step at a time on this machine:
  1. the MNIST split (make_mnist_split.py)
  2. `standin.py up` (emulator, registry, instance container). Image builds are cached by content:
     the script runs it once untimed first so that a cold cache does not count, then times the
     cached start that a second demo pays.
  3. ansible-playbook site.yml with the demo variables (tests/standin/demo.yml) and train_force, so
     training really runs again; its summary (-e summary_file) gives the wall time per phase
     (provision, docker, train, teardown) and the seconds the training container ran.
Overhead = the playbook's wall time - the time inside training. Two measures of "inside training"
are printed side by side: the container's run time (docker State StartedAt..FinishedAt: Python and
torch start-up included) and the sum of the trainer's own epoch times (metrics.jsonl).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests" / "standin"))
import emulator  # noqa: E402  (tests/standin is plumbing, not a package)


def timed(cmd: list[str], env: dict | None = None, quiet: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=quiet, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.stderr.write((proc.stdout or "") + (proc.stderr or ""))
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return elapsed, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs (default 2, as the demo)")
    parser.add_argument("--limit-train", type=int, default=0, help="train on the first N images only (0: all 8,000)")
    parser.add_argument("--run-name", default="bench-demo")
    args = parser.parse_args()

    data = REPO / ".cache" / "demo" / "data"
    state = Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", REPO / ".cache" / "standin"))
    python = str(BIN / "python")

    rows: list[tuple[str, float]] = []
    t, _output = timed([python, "hacking/make_mnist_split.py", "--source", str(REPO.parent / "shared" / "data" / "mnist"),
                        "--dest", str(data)])
    rows.append(("data split", t))
    # STANDIN_INSTANCE: another instance container than the default one, as for tests/standin/demo.sh.
    instance = os.environ.get("STANDIN_INSTANCE", "")
    up = [python, "tests/standin/standin.py", "up"] + (["--instance-name", instance] if instance else [])
    timed(up, quiet=False)  # warm-up: builds images on a cold cache
    t, _output = timed(up)
    rows.append(("stand-in up (images cached)", t))

    with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
        summary_file = Path(tmp) / "summary.json"
        artifacts = Path(tmp) / "artifacts"
        train_args = ["--threads", "2"] + (["--limit-train", str(args.limit_train)] if args.limit_train else [])
        extra = {"run_name": args.run_name, "epochs": args.epochs, "train_args": train_args, "train_force": True,
                 "data_src": str(data), "artifacts_dir": str(artifacts), "summary_file": str(summary_file)}
        env = dict(os.environ, **emulator.CLIENT_ENV, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        cmd = [str(BIN / "ansible-playbook"), "site.yml", "-e", "@tests/standin/demo.yml",
               "-e", "@" + str(state / (f"vars-{instance}.yml" if instance else "vars.yml")), "-e", json.dumps(extra)]
        playbook_s, proc = timed(cmd, env=env)
        summary = json.loads(summary_file.read_text())
        epochs = [json.loads(line) for line in (artifacts / args.run_name / "metrics.jsonl").read_text().splitlines() if line.strip()]

    if summary.get("outcome") != "succeeded":
        raise SystemExit(f"the run failed: {summary.get('error')}")
    instance = summary["instances"][0]
    phases = summary["phase_seconds"]
    container_s = float(instance["seconds_in_training"])
    epoch_s = sum(float(e.get("seconds", 0)) for e in epochs)
    recap = re.findall(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+).*?skipped=(\d+)", proc.stdout, re.M)

    for phase in ("provision", "docker", "train", "teardown"):
        if phase in phases:
            rows.append((f"site.yml: {phase}", float(phases[phase])))
    rows.append(("site.yml: whole playbook (ansible-playbook wall time)", playbook_s))

    width = max(len(row[0]) for row in rows)
    print(f"demo phases ({args.epochs} epochs, {'all 8000' if not args.limit_train else args.limit_train} train images, "
          f"instance {instance['type']} -> {summary['instance_states']})")
    for name, seconds in rows:
        print(f"  {name:<{width}}  {seconds:8.1f} s")
    print(f"  {'inside training: container run time':<{width}}  {container_s:8.1f} s")
    print(f"  {'inside training: sum of epoch times':<{width}}  {epoch_s:8.1f} s")
    print(f"orchestration overhead = playbook wall - container run time = {playbook_s - container_s:.1f} s "
          f"({(playbook_s - container_s) / playbook_s:.0%} of the playbook)")
    print(f"orchestration overhead = playbook wall - epoch time          = {playbook_s - epoch_s:.1f} s "
          f"({(playbook_s - epoch_s) / playbook_s:.0%} of the playbook)")
    print(f"final accuracy {instance['final_accuracy']}; tasks per host (ok/changed/skipped): "
          + ", ".join(f"{h} {o}/{c}/{s}" for h, o, c, s in recap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
