# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Follow a detached training container until it exits, showing its progress as it goes.

Ansible prints a task's result only when the task ends, so a training that runs for hours
would be silent. This action polls the target through the task's own connection (SSH,
or whatever connection the host uses): one command per poll waits on the target for the
container to exit (``docker wait``, for at most one poll interval), then reads its state and the
log lines written since the last poll, and every ``PROGRESS {json}`` line is displayed at once.
So the exit is seen as it happens, not up to a poll interval later. The container is never
started, stopped or attached to: when the controller goes away the training carries on, and the
next run follows it again.

Options (all but ``name`` optional):
  name           the container to follow
  timeout        seconds to wait for the exit (0: only look once); on timeout the task fails
                 and the container keeps running
  poll_interval  seconds between polls: the longest a poll waits on the target for the exit
  progress_prefix  log lines starting with it carry one JSON object each
  tail_lines     how many last log lines a failure message quotes
  save_log       path on the target: after the exit (or the timeout) the full log is written there
                 (changed only when its content changed)
  show_log       print every log line as it arrives, not only the progress records
  docker         the docker CLI on the target

Returns: status, exit_code, exit_meaning (what the code means, where known), oom_killed, started_at, finished_at, run_seconds (time the
container ran), progress (the parsed PROGRESS objects seen in this task), last_progress,
log_tail, and failed with a message when the exit code is not 0 or the timeout passed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import time
from datetime import datetime, timezone

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# Separates the state document from the log lines in one poll's output.
_MARK = "----cloudtrain-follow-logs----"
# `docker logs --timestamps` prefixes RFC3339Nano (trailing zeros trimmed) then a space.
_TS_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z (.*)$")
# Connection errors tolerated in a row before giving up (an SSH drop, a restarting sshd).
_MAX_CONNECTION_ERRORS = 5
# Exit codes with a known meaning, said next to the number.
EXIT_MEANINGS = {
    2: "bad arguments or input (a usage error, as argparse reports it)",
    75: "stopped after writing a checkpoint (SIGTERM); a re-run resumes",
    126: "the command cannot be executed",
    127: "the command was not found in the image",
    130: "interrupted (SIGINT)",
    134: "aborted (SIGABRT)",
    137: "killed (SIGKILL): out of memory, or stopped by force",
    139: "crashed (segmentation fault)",
    143: "terminated (SIGTERM) without a checkpoint exit",
}


def exit_meaning(code: int | None, oom_killed: bool = False) -> str | None:
    """What an exit code means, where it has a known meaning."""
    if oom_killed:
        return "killed: out of memory"
    return EXIT_MEANINGS.get(code) if code else None


def _ts_key(stamp: str, fraction: str | None) -> tuple[str, int]:
    """Sortable key of a docker timestamp: the seconds part and the nanoseconds."""
    return stamp, int(((fraction or "") + "000000000")[:9])


def _docker_time(value: str | None) -> float | None:
    """Seconds since the epoch of a docker State time ('0001-01-01T00:00:00Z' = never)."""
    if not value or value.startswith("0001-"):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", value)
    if not match:
        return None
    base = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return base.timestamp() + float("0." + (match.group(2) or "0"))


def format_progress(progress: dict) -> str:
    """One readable line for a PROGRESS record; unknown keys are left out, missing ones too."""
    parts = []
    if "epoch" in progress:
        parts.append("epoch %s/%s" % (progress["epoch"], progress.get("epochs", "?")))
    for key, fmt in (("train_loss", "train_loss %.4f"), ("test_loss", "test_loss %.4f"),
                     ("accuracy", "accuracy %.4f"), ("samples_per_s", "%.0f samples/s"),
                     ("seconds", "%.1fs"), ("lr", "lr %.3g")):
        value = progress.get(key)
        if isinstance(value, (int, float)):
            parts.append(fmt % value)
    return "  ".join(parts) if parts else json.dumps(progress, sort_keys=True)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    _ARGSPEC = {
        "name": {"type": "str", "required": True},
        "timeout": {"type": "int", "default": 86400},
        "poll_interval": {"type": "float", "default": 10.0},
        "progress_prefix": {"type": "str", "default": "PROGRESS "},
        "tail_lines": {"type": "int", "default": 20},
        "save_log": {"type": "path"},
        "show_log": {"type": "bool", "default": False},
        "docker": {"type": "str", "default": "docker"},
    }

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        result = super().run(tmp, task_vars)
        del tmp
        args = self.validate_argument_spec(argument_spec=self._ARGSPEC)[1]
        follower = _Follower(self, args, (task_vars or {}).get("inventory_hostname", "target"))
        result.update(follower.follow(check_mode=self._task.check_mode))
        return result


class _Follower:
    """The polling loop, apart from Ansible's plumbing."""

    def __init__(self, action: ActionModule, args: dict, host: str):
        self._action = action
        self._args = args
        self._host = host
        self._docker = args["docker"]
        self._name = shlex.quote(args["name"])
        self._since: tuple[str, int] | None = None
        self._since_raw: str | None = None
        self._seen_at_since: set[str] = set()
        self._tail: list[str] = []
        self.progress: list[dict] = []

    # -- one round trip -------------------------------------------------------------
    def _poll(self, wait: float = 0) -> tuple[dict | None, list[str]]:
        """The container's state and its log lines since the last poll, after waiting up to `wait`
        seconds on the target for it to exit (an exited or missing container ends the wait at once)."""
        since = " --since %s" % shlex.quote(self._since_raw) if self._since_raw else ""
        waiting = "timeout %.1f %s wait %s >/dev/null 2>&1; " % (wait, self._docker, self._name) if wait > 0 else ""
        cmd = (
            "{w}{d} inspect --format '{{{{json .State}}}}' {n} || exit 3; echo {m}; "
            "{d} logs --timestamps{s} {n} 2>&1"
        ).format(w=waiting, d=self._docker, n=self._name, m=_MARK, s=since)
        res = self._action._low_level_execute_command(cmd, sudoable=True)
        out = res.get("stdout", "")
        if res.get("rc") == 3 or _MARK not in out:
            if "No such" in out + res.get("stderr", "") or res.get("rc") == 3:
                return None, []
            raise RuntimeError("docker on the target failed: %s" % (res.get("stderr") or out).strip())
        state_text, _mark, logs = out.partition(_MARK)
        return json.loads(state_text.strip()), logs.splitlines()

    def _new_lines(self, lines: list[str]) -> list[str]:
        fresh = []
        for raw in lines:
            match = _TS_LINE.match(raw)
            if not match:
                if raw.strip():
                    fresh.append(raw)
                continue
            key = _ts_key(match.group(1), match.group(2))
            text = match.group(3)
            # --since is inclusive at its boundary: skip what was already shown.
            if self._since is not None and (key < self._since or (key == self._since and text in self._seen_at_since)):
                continue
            if key != self._since:
                self._since, self._seen_at_since = key, set()
                self._since_raw = raw.split(" ", 1)[0]
            self._seen_at_since.add(text)
            fresh.append(text)
        return fresh

    def _show(self, lines: list[str]) -> None:
        prefix = self._args["progress_prefix"]
        for line in lines:
            self._tail.append(line)
            if line.startswith(prefix) and not self._args["show_log"]:
                try:
                    record = json.loads(line[len(prefix):])
                except ValueError:
                    display.v("[%s] %s" % (self._host, line))
                    continue
                if isinstance(record, dict):
                    self.progress.append(record)
                    display.display("[%s] %s: %s" % (self._host, self._args["name"], format_progress(record)))
                    continue
            if self._args["show_log"]:
                display.display(line)
            else:
                display.v("[%s] %s" % (self._host, line))
        del self._tail[:-max(self._args["tail_lines"], 1)]

    def _save_log(self) -> bool:
        path = shlex.quote(self._args["save_log"])
        cmd = (
            "{d} logs {n} > {p}.new 2>&1 || exit 1; "
            "if cmp -s {p}.new {p}; then rm -f {p}.new; echo same; else mv -f {p}.new {p}; echo changed; fi"
        ).format(d=self._docker, n=self._name, p=path)
        res = self._action._low_level_execute_command(cmd, sudoable=True)
        if res.get("rc") != 0:
            raise RuntimeError("could not save the log to %s: %s" % (self._args["save_log"], res.get("stderr", "").strip()))
        return res.get("stdout", "").strip().endswith("changed")

    # -- the loop -------------------------------------------------------------------
    def follow(self, check_mode: bool) -> dict:
        deadline = time.monotonic() + max(self._args["timeout"], 0)
        errors = 0
        state = None
        # This runs in a worker process forked by ansible-playbook: when that dies (killed, its
        # terminal closed) the worker is handed to another parent, and stops polling an orphaned run.
        parent = os.getppid()
        wait = 0.0  # the first look does not wait: a finished run is reported at once
        while True:
            if os.getppid() != parent:
                return {"failed": True, "status": "controller-gone",
                        "msg": "ansible-playbook is gone; stopped following %s (it keeps running)" % self._args["name"]}
            polled = time.monotonic()
            try:
                state, lines = self._poll(wait)
                errors = 0
            except AnsibleConnectionFailure as exc:
                errors += 1
                if errors > _MAX_CONNECTION_ERRORS:
                    raise
                display.warning("lost the connection while following %s (%s); retrying" % (self._args["name"], exc))
                time.sleep(self._args["poll_interval"])
                continue
            if state is None:
                return {"failed": True, "status": "missing", "msg": "container %s does not exist" % self._args["name"]}
            self._show(self._new_lines(lines))
            running = state.get("Status") in ("running", "restarting", "created", "paused")
            if not running or check_mode or time.monotonic() >= deadline:
                break
            # A wait that ended early on a container still counted as running (created, restarting,
            # paused) is made up here, so the loop never polls faster than poll_interval.
            time.sleep(max(wait - (time.monotonic() - polled), 0))
            wait = max(min(self._args["poll_interval"], deadline - time.monotonic()), 0.1)
        return self._result(state, running, check_mode)

    def _result(self, state: dict, running: bool, check_mode: bool) -> dict:
        started, finished = _docker_time(state.get("StartedAt")), _docker_time(state.get("FinishedAt"))
        result = {
            "changed": False,
            "status": state.get("Status"),
            "exit_code": None if running else state.get("ExitCode"),
            "oom_killed": bool(state.get("OOMKilled")),
            "started_at": state.get("StartedAt"),
            "finished_at": None if running else state.get("FinishedAt"),
            "run_seconds": round(finished - started, 3) if started and finished and not running else None,
            "exit_meaning": None if running else exit_meaning(state.get("ExitCode"), bool(state.get("OOMKilled"))),
            "progress": self.progress,
            "last_progress": self.progress[-1] if self.progress else None,
            "log_tail": list(self._tail),
        }
        if running:
            if not check_mode:
                # The log so far comes home with the outputs, as after an exit.
                if self._args.get("save_log"):
                    result["changed"] = self._save_log()
                result["failed"] = True
                result["msg"] = (
                    "container %s is still running after %ss; it keeps running: run the play again to "
                    "follow it, or raise the timeout" % (self._args["name"], self._args["timeout"])
                )
            return result
        if self._args.get("save_log") and not check_mode:
            result["changed"] = self._save_log()
        code = state.get("ExitCode")
        if code != 0:
            result["failed"] = True
            reason = " (%s)" % result["exit_meaning"] if result["exit_meaning"] else ""
            result["msg"] = "training container %s exited with code %s%s; last log lines:\n%s" % (
                self._args["name"], code, reason, "\n".join(self._tail) or "(no output)")
        return result
