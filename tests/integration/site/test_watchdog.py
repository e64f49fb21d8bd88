"""The shutdown watchdog works without the controller: armed at the start of a run, it powers the
instance off, and the emulator shows it stopped, with ansible-playbook killed long before."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from site_helpers import BIN, REPO, STANDIN, instance_states

sys.path.insert(0, str(STANDIN))
import instances  # noqa: E402  (tests/standin is plumbing, not a package)


def test_watchdog_stops_the_instance_after_the_controller_died(aws, standin, tmp_path):
    run_name = "watchdog-alone"
    extra = {"run_name": run_name, "watchdog_minutes": 1, "epochs": 1, "train_poll_interval": 2,
             "artifacts_dir": str(tmp_path / "artifacts")}
    cmd = [str(BIN / "ansible-playbook"), "site.yml", "-e", "@" + str(STANDIN / "demo.yml"),
           "-e", "@" + str(standin), "-e", json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output = []
    armed_at = None
    try:
        for line in proc.stdout:
            output.append(line)
            if armed_at is None and "TASK [Arm the shutdown watchdog]" in line:
                armed_at = "task"
            elif armed_at == "task" and line.startswith("changed: [i-"):
                armed_at = time.monotonic()
                break
    finally:
        # The controller dies: no teardown play, the instance is left running.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert isinstance(armed_at, float), "".join(output)[-3000:]
    instance_id = next(line.split("[", 1)[1].split("]", 1)[0] for line in output if line.startswith("changed: [i-"))
    assert instance_states(run_name) == ["running"]

    # The minute, then systemd's shutdown of the instance: over a minute on a loaded 2-core machine.
    deadline = armed_at + 60 + 150
    while time.monotonic() < deadline and instance_states(run_name) != ["stopped"]:
        time.sleep(1)
    assert instance_states(run_name) == ["stopped"], "".join(output)[-3000:]
    assert time.monotonic() - armed_at > 55  # not before the watchdog's minute
    assert instances.containers().get(instance_id) == "exited"
