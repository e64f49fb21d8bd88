"""Helpers for the provision/teardown tests: run a playbook, list what a run owns in the emulator."""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_playbook(env, playbook, *extra, check=False):
    """ansible-playbook from the repo root; returns (rc, output)."""
    cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook") if (REPO / ".venv" / "bin").exists() else "ansible-playbook",
           str(REPO / "playbooks" / playbook)]
    if check:
        cmd.append("--check")
    for item in extra:
        cmd += ["-e", item]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def run_owned(clients, run_name):
    """Everything in the emulator that carries the run's tag or name, terminated instances excepted."""
    ec2, iam = clients["ec2"], clients["iam"]
    tag = [{"Name": "tag:cloudtrain:run", "Values": [run_name]}]
    name = "cloudtrain-" + run_name
    owned = {
        "instances": [i["InstanceId"] for r in ec2.describe_instances(Filters=tag + [
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]
            for i in r["Instances"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"] == name],
        "security_groups": [g["GroupId"] for g in ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]],
        "launch_templates": [t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]
                             if t["LaunchTemplateName"] == name],
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"] == name],
        "instance_profiles": [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
                              if p["InstanceProfileName"] == name],
    }
    return {k: v for k, v in owned.items() if v}
