"""Helpers of the site.yml tests: run the playbook against the stand-in, read the emulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
STANDIN = REPO / "tests" / "standin"
BIN = Path(sys.executable).parent
DATA = REPO / ".cache" / "site-tests" / "data"


def golden_ami(vars_file: Path) -> dict:
    """provision_ami_id of the stand-in's golden AMI (Docker installed, training image pulled), if it has one."""
    ami = yaml.safe_load(vars_file.read_text()).get("standin_golden_ami_id")
    return {"provision_ami_id": ami} if ami else {}


def site_command(vars_file: Path, run_name: str, tmp_path: Path, golden: bool = True,
                 **extra) -> tuple[list[str], dict]:
    """The ansible-playbook site.yml command line against the stand-in and its environment.

    golden: launch from the golden AMI, saving a fresh instance the Docker install and the image
    pull; tests of those pass False (the plain AMI, as a real first run on the Deep Learning AMI).
    """
    extra_vars = {
        **(golden_ami(vars_file) if golden else {}),
        "run_name": run_name,
        "epochs": 1,
        "train_args": ["--limit-train", "500", "--limit-test", "200", "--threads", "1"],
        "data_src": str(DATA),
        "artifacts_dir": str(tmp_path / "artifacts"),
        "train_poll_interval": 2,
        "watchdog_minutes": 0,
        **extra,
    }
    cmd = [str(BIN / "ansible-playbook"), "site.yml",
           "-e", "@" + str(STANDIN / "demo.yml"), "-e", "@" + str(vars_file), "-e", json.dumps(extra_vars)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    return cmd, env


def run_site(vars_file: Path, run_name: str, tmp_path: Path, golden: bool = True,
             **extra) -> subprocess.CompletedProcess:
    """ansible-playbook site.yml against the stand-in, small and fast; extra vars as keyword arguments."""
    cmd, env = site_command(vars_file, run_name, tmp_path, golden, **extra)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)


def start_site(vars_file: Path, run_name: str, tmp_path: Path, log: Path, golden: bool = True,
               **extra) -> subprocess.Popen:
    """site.yml in the background (its own process group, output to log), for tests that act meanwhile."""
    cmd, env = site_command(vars_file, run_name, tmp_path, golden, **extra)
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def run_instances(run_name: str) -> list[dict]:
    """The run's instances in the emulator, oldest first (terminated ones too)."""
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    found = ec2.describe_instances(Filters=[{"Name": "tag:cloudtrain:run", "Values": [run_name]}])
    return sorted((i for r in found["Reservations"] for i in r["Instances"]), key=lambda i: i["LaunchTime"])


def instance_states(run_name: str) -> list[str]:
    """States of the run's instances as the emulator sees them (terminated ones too)."""
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    found = ec2.describe_instances(Filters=[{"Name": "tag:cloudtrain:run", "Values": [run_name]}])
    return [i["State"]["Name"] for r in found["Reservations"] for i in r["Instances"]]
