"""Spot, S3 access, an imported key and two instances: launch, re-run, check mode, teardown, teardown again."""
from __future__ import annotations

import json
import re
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from provision_helpers import run_owned, run_playbook

RUN = "ct-pytest-lifecycle"


def _changed(out: str) -> int:
    return int(re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", out).group(1))


def test_spot_s3_imported_key_lifecycle(emulator_env, clients, tmp_path):
    ec2, iam = clients["ec2"], clients["iam"]
    public_key = tmp_path / "id_ed25519.pub"
    public_key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    run_playbook(emulator_env, "teardown.yml", f"run_name={RUN}", "teardown_action=terminate")

    inputs = json.dumps({
        "run_name": RUN, "instance_type": "c7g.large", "instance_count": 2, "market": "spot",
        "spot_max_price": "0.25", "s3_bucket": "ct-pytest-bucket", "s3_prefix": "/runs/one/",
        "public_key": str(public_key), "ssh_cidrs": ["198.51.100.0/24"], "wait_for_connection": False,
    })
    try:
        rc, out = run_playbook(emulator_env, "provision.yml", inputs)
        assert rc == 0, out

        instances = [i for r in ec2.describe_instances(Filters=[
            {"Name": "tag:cloudtrain:run", "Values": [RUN]},
            {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"] for i in r["Instances"]]
        assert len(instances) == 2
        # Graviton type: the arm64 Amazon Linux 2023 AMI from the emulator's public SSM parameter.
        al2023_arm = clients["ssm"].get_parameter(
            Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64")["Parameter"]["Value"]
        assert {i["ImageId"] for i in instances} == {al2023_arm}
        assert {i["KeyName"] for i in instances} == {"cloudtrain-" + RUN}

        # The emulator ignores a launch template's market options: check what the template holds.
        version = ec2.describe_launch_template_versions(LaunchTemplateName="cloudtrain-" + RUN)["LaunchTemplateVersions"][0]
        assert version["LaunchTemplateData"]["InstanceMarketOptions"] == {
            "MarketType": "spot",
            "SpotOptions": {"MaxPrice": "0.25", "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
        }
        policy = iam.get_role_policy(RoleName="cloudtrain-" + RUN, PolicyName="cloudtrain-s3")["PolicyDocument"]
        resources = [s["Resource"] for s in policy["Statement"]]
        assert resources == ["arn:aws:s3:::ct-pytest-bucket", "arn:aws:s3:::ct-pytest-bucket/runs/one/*"]
        key = ec2.describe_key_pairs(KeyNames=["cloudtrain-" + RUN])["KeyPairs"][0]
        assert {t["Key"]: t["Value"] for t in key["Tags"]}["managed-by"] == "cloudtrain.ec2"

        # Re-run: nothing changes. The connection wait is on, but provision_host_vars maps both instances to
        # this machine (the local demo maps them to a container the same way), so no 54.x address is touched.
        rerun = json.loads(inputs)
        rerun.update(wait_for_connection=True, provision_host_vars={
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable})
        rc, out = run_playbook(emulator_env, "provision.yml", json.dumps(rerun))
        assert rc == 0 and _changed(out) == 0, out
        assert out.count("ok: [localhost -> i-") == 2, out
        # Check mode: only the imported key pair reports a change. amazon.aws.ec2_key cannot compare an
        # imported key's fingerprint without importing it, which check mode does not do.
        rc, out = run_playbook(emulator_env, "provision.yml", inputs, check=True)
        assert rc == 0 and _changed(out) == 1, out
        changed_tasks = re.findall(r"TASK \[([^\]]+)\][^\n]*\nchanged:", out)
        assert changed_tasks == ["cloudtrain.ec2.provision : Key pair (AWS-generated, private key written 0600 "
                                 "on the controller, or the imported public key)"], out
    finally:
        rc, out = run_playbook(emulator_env, "teardown.yml", f"run_name={RUN}", "teardown_action=terminate")
    assert rc == 0, out
    assert run_owned(clients, RUN) == {}
    rc, out = run_playbook(emulator_env, "teardown.yml", f"run_name={RUN}", "teardown_action=terminate")
    assert rc == 0 and _changed(out) == 0, out
