"""follow_container's polling loop: each poll waits on the target for the exit (docker wait).

The loop runs its real shell commands here through a local shell, against a small docker CLI
stand-in that plays one container from files (state, log, an `exited` marker), so the command
line the action builds (timeout, docker wait, inspect, logs) is what is tested.
"""
from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from ansible_collections.cloudtrain.ec2.plugins.action.follow_container import _Follower

FAKE_DOCKER = r"""#!/bin/sh
# docker wait|inspect|logs for one container, from the files beside this script.
dir=$(dirname "$0")
case "$1" in
  wait) echo wait >> "$dir/calls"
        while [ ! -e "$dir/exited" ] && grep -q '"running"' "$dir/state.json"; do sleep 0.05; done
        echo 0 ;;
  inspect) echo poll >> "$dir/calls"; cat "$dir/state.json" ;;
  logs) cat "$dir/log" ;;
esac
"""


class LocalShell:
    """Stands for the action plugin: _low_level_execute_command runs the command in a local shell."""

    def _low_level_execute_command(self, cmd, sudoable=True):
        del sudoable
        proc = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, check=False)
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def state(status: str, code: int = 0) -> str:
    return json.dumps({"Status": status, "ExitCode": code, "OOMKilled": False,
                       "StartedAt": "2026-12-02T10:00:00.5Z",
                       "FinishedAt": "2026-12-02T10:00:03Z" if status == "exited" else "0001-01-01T00:00:00Z"})


@pytest.fixture(name="container")
def fixture_container(tmp_path):
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    (tmp_path / "state.json").write_text(state("running"))
    (tmp_path / "log").write_text("2026-12-02T10:00:01.000000001Z PROGRESS {\"epoch\": 1, \"epochs\": 1}\n")
    return tmp_path


def follower(container, poll_interval: float, timeout: int = 60) -> _Follower:
    args = {"name": "run-1", "timeout": timeout, "poll_interval": poll_interval, "progress_prefix": "PROGRESS ",
            "tail_lines": 5, "save_log": None, "show_log": False, "docker": str(container / "docker")}
    return _Follower(LocalShell(), args, "host")


def exit_after(container, seconds: float) -> None:
    def finish():
        time.sleep(seconds)
        (container / "state.json").write_text(state("exited"))
        (container / "exited").touch()
    threading.Thread(target=finish, daemon=True).start()


def test_the_exit_is_seen_when_it_happens_not_a_poll_interval_later(container):
    exit_after(container, 1.0)
    started = time.monotonic()
    result = follower(container, poll_interval=30).follow(check_mode=False)
    elapsed = time.monotonic() - started
    assert result["exit_code"] == 0 and result["status"] == "exited"
    assert result["progress"] == [{"epoch": 1, "epochs": 1}]
    assert 0.9 < elapsed < 10, elapsed  # a sleeping poll would have taken 30 s
    assert (container / "calls").read_text().split() == ["poll", "wait", "poll"]  # two looks, one wait


def test_a_container_that_never_starts_is_not_polled_faster_than_the_interval(container):
    (container / "state.json").write_text(state("created"))  # docker wait returns at once for it
    started = time.monotonic()
    result = follower(container, poll_interval=0.5, timeout=2).follow(check_mode=False)
    elapsed = time.monotonic() - started
    assert result["failed"] and "still running" in result["msg"]
    polls = (container / "calls").read_text().split().count("poll")
    assert 1.9 < elapsed < 6, elapsed
    assert polls <= 6, polls  # 2 s at one poll per 0.5 s, not a busy loop
