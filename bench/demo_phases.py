"""Time the local demo phase by phase, cold and warm side by side, and print the orchestration overhead.

    .venv/bin/python bench/demo_phases.py [--epochs N] [--limit-train N]

What it does, timed one step at a time on this machine:
  1. the MNIST split (make_mnist_split.py)
  2. `standin.py up` (emulator, registry, the instances' reconciler). Image builds are cached by
     content: the script runs it once untimed first so that a cold cache does not count, then times
     the cached start that a second demo pays.
  3. ansible-playbook site.yml with the demo variables (tests/standin/demo.yml) three times:
     cold: the run's instance terminated first, so a fresh instance boots from the demo's plain AMI
           (Docker to install, the 6 GB training image to pull; the stand-in's images are cached);
     warm: the same run again, its instance stopped by the cold run: started again, image on disk;
     golden: a fresh instance of another run name from the stand-in's golden AMI (Docker and the
           training image baked in, as a team's own AMI): a fresh instance with the images cached.
     train_force makes training really run both times; each run's summary (-e summary_file) gives
     the wall time per phase (provision, docker, train, teardown) and the seconds the training
     container ran.
The overhead targets: a warm re-run under 45 s, a fresh golden-AMI instance under 60 s.
Overhead = the playbook's wall time - the time inside training (the container's run time:
Python and torch start-up included; and the sum of the trainer's own epoch times, metrics.jsonl).
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
sys.path.insert(0, str(REPO / "tests" / "integration" / "site"))
import emulator  # noqa: E402  (tests/standin is plumbing, not a package)
from site_helpers import golden_ami  # noqa: E402  (provision_ami_id of the stand-in's golden AMI)


def timed(cmd: list[str], env: dict | None = None, quiet: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=quiet, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.stderr.write((proc.stdout or "") + (proc.stderr or ""))
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return elapsed, proc


def terminate(run_name: str, env: dict) -> None:
    """No instance of the run left (terminated, with its key pair and the rest): the next run is a fresh one."""
    timed([str(BIN / "ansible-playbook"), "playbooks/teardown.yml", "-e", f"run_name={run_name}",
           "-e", "teardown_action=terminate"], env=env)


def run_site(args, run_name: str, data: Path, vars_file: Path, tmp: Path, label: str, **more) -> dict:
    summary_file = tmp / f"summary-{label}.json"
    artifacts = tmp / f"artifacts-{label}"
    train_args = ["--threads", "2"] + (["--limit-train", str(args.limit_train)] if args.limit_train else [])
    extra = {"run_name": run_name, "epochs": args.epochs, "train_args": train_args, "train_force": True,
             "data_src": str(data), "artifacts_dir": str(artifacts), "summary_file": str(summary_file), **more}
    env = dict(os.environ, **emulator.CLIENT_ENV, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [str(BIN / "ansible-playbook"), "site.yml", "-e", "@tests/standin/demo.yml",
           "-e", "@" + str(vars_file), "-e", json.dumps(extra)]
    playbook_s, proc = timed(cmd, env=env)
    summary = json.loads(summary_file.read_text())
    if summary.get("outcome") != "succeeded":
        raise SystemExit(f"the {label} run failed: {summary.get('error')}")
    epochs = [json.loads(line) for line in (artifacts / run_name / "metrics.jsonl").read_text().splitlines()
              if line.strip()]
    pulled = re.search(r"TASK \[cloudtrain\.ec2\.train : Pull the training image\][^\n]*\n(?:\w+day [^\n]*\n)?(\w+):", proc.stdout)
    return {"playbook": playbook_s, "phases": summary["phase_seconds"], "instance": summary["instances"][0],
            "states": summary["instance_states"], "epoch_s": sum(float(e.get("seconds", 0)) for e in epochs),
            "pull": pulled.group(1) if pulled else "?"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs (default 2, as the demo)")
    parser.add_argument("--limit-train", type=int, default=0, help="train on the first N images only (0: all 8,000)")
    parser.add_argument("--run-name", default="bench-demo")
    args = parser.parse_args()

    data = REPO / ".cache" / "demo" / "data"
    state = Path(os.environ.get("CLOUDTRAIN_STANDIN_STATE", REPO / ".cache" / "standin"))
    python = str(BIN / "python")

    t_split, _output = timed([python, "hacking/make_mnist_split.py", "--source",
                              str(REPO.parent / "shared" / "data" / "mnist"), "--dest", str(data)])
    up = [python, "tests/standin/standin.py", "up"]
    timed(up, quiet=False)  # warm-up: builds images on a cold cache
    t_up, _output = timed(up)
    golden = golden_ami(state / "vars.yml")
    env = dict(os.environ, **emulator.CLIENT_ENV, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    golden_run = args.run_name + "-golden"
    terminate(args.run_name, env)
    terminate(golden_run, env)
    with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
        runs = {label: run_site(args, args.run_name, data, state / "vars.yml", Path(tmp), label)
                for label in ("cold", "warm")}
        if golden:
            runs["golden"] = run_site(args, golden_run, data, state / "vars.yml", Path(tmp), "golden", **golden)
            terminate(golden_run, env)

    print(f"demo phases ({args.epochs} epochs, {'all 8000' if not args.limit_train else args.limit_train} train images, "
          f"instance {runs['cold']['instance']['type']})")
    print(f"  {'data split':<44}  {t_split:8.1f} s")
    print(f"  {'stand-in up (images cached)':<44}  {t_up:8.1f} s")
    print(f"  {'':<44}  " + "    ".join(f"{label:>8}" for label in runs))
    for phase in ("provision", "docker", "train", "teardown"):
        print(f"  {'site.yml: ' + phase:<44}  " + "    ".join(f"{float(r['phases'].get(phase, 0)):8.1f}" for r in runs.values()))
    print(f"  {'site.yml: whole playbook (wall time)':<44}  " + "    ".join(f"{r['playbook']:8.1f}" for r in runs.values()))
    container = {k: float(r["instance"]["seconds_in_training"]) for k, r in runs.items()}
    print(f"  {'inside training: container run time':<44}  " + "    ".join(f"{container[k]:8.1f}" for k in runs))
    print(f"  {'inside training: sum of epoch times':<44}  " + "    ".join(f"{r['epoch_s']:8.1f}" for r in runs.values()))
    overhead = {k: r["playbook"] - container[k] for k, r in runs.items()}
    print(f"  {'overhead = wall - container run time':<44}  " + "    ".join(f"{overhead[k]:8.1f}" for k in runs))
    print(f"  {'training image pull (task status)':<44}  " + "    ".join(f"{r['pull']:>8}" for r in runs.values()))
    targets = {"warm": 45, "golden": 60}  # #12: a warm re-run, and a fresh instance with the images cached
    for label, target in targets.items():
        if label in overhead:
            print(f"overhead {label}: {overhead[label]:.1f} s, target under {target} s: "
                  f"{'met' if overhead[label] < target else 'NOT met'}")
    print(f"warm/cold overhead ratio {overhead['warm'] / overhead['cold']:.2f}; same instance: "
          f"{runs['cold']['instance']['id'] == runs['warm']['instance']['id']}; final states "
          f"{runs['cold']['states']} / {runs['warm']['states']}; final accuracy {runs['warm']['instance']['final_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
