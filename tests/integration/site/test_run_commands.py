"""The run commands (status, logs, results, stop) against the stand-in, on runs found by their tag only.

One module, two runs started at once in one emulator (they must stay apart):
- "cmd-good" runs from the built collection installed into a temporary collections path, started
  from another directory as `ansible-playbook cloudtrain.ec2.site`. Its controller is killed while
  it trains: no worker keeps polling; a second `cloudtrain.ec2.site` with the same name, started at
  once, re-attaches and finishes it while the commands look at the run in progress (keep_instance,
  so they then see a finished run on a running instance); `stop` terminates it and nothing is left.
The tests run in file order on the shared runs.
- "cmd-fail" runs from the checkout; its training writes an output and a model file, then fails.
  They come home anyway, the run says where, and `results` fetches them again from S3.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

from site_helpers import BIN, DATA, REPO, STANDIN, instance_states

sys.path.insert(0, str(REPO / "tests" / "integration" / "provision"))
from provision_helpers import run_owned  # noqa: E402

GOOD, FAIL = "cmd-good", "cmd-fail"
BUCKET = "ct-run-commands"
# The failing run's training: an output and a model file, a progress record, then exit code 3.
FAIL_COMMAND = ('echo partial > "$CLOUDTRAIN_OUTPUT_DIR/partial.txt"; echo weights > model.pt; '
                'echo \'PROGRESS {"epoch": 1, "epochs": 2}\'; exit 3')


def _extra(run_name: str, artifacts: Path, **more) -> str:
    return json.dumps({"run_name": run_name, "epochs": 10, "data_src": str(DATA), "artifacts_dir": str(artifacts),
                       "train_args": ["--limit-train", "8000", "--limit-test", "300", "--threads", "1"],
                       "train_poll_interval": 2, "watchdog_minutes": 0, **more})


class Runs:
    """The shared set-up: the installed collection, the environments, the two runs' outputs."""

    def __init__(self, tmp: Path, vars_file: Path):
        self.tmp, self.vars_file = tmp, vars_file
        self.collections = tmp / "collections"
        self.elsewhere = tmp / "elsewhere"
        self.elsewhere.mkdir()
        # The installed collection, run from a folder with no ansible.cfg: nothing of the checkout is used.
        self.installed_env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        self.installed_env.update(ANSIBLE_COLLECTIONS_PATH=str(self.collections), ANSIBLE_HOST_KEY_CHECKING="False",
                                  ANSIBLE_NOCOLOR="1", PWD=str(self.elsewhere), PYTHONUNBUFFERED="1")
        self.checkout_env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                                 PYTHONUNBUFFERED="1")
        self.outputs: dict[str, str] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    def fail_output(self) -> str:
        """The failing run's output, once it ended (it started with the module's set-up)."""
        if "fail" not in self.outputs:
            self.outputs["fail"] = self.procs["fail"].communicate(timeout=900)[0]
        return self.outputs["fail"]

    def stand_in(self) -> list[str]:
        return ["-e", "@" + str(STANDIN / "demo.yml"), "-e", "@" + str(self.vars_file)]

    def command(self, name: str, *extra: str, installed: bool = False) -> subprocess.CompletedProcess:
        """ansible-playbook cloudtrain.ec2.<name> (installed) or playbooks/<name>.yml (checkout)."""
        playbook = "cloudtrain.ec2." + name if installed else str(REPO / "playbooks" / (name + ".yml"))
        cmd = [str(BIN / "ansible-playbook"), playbook, *self.stand_in()]
        for item in extra:
            cmd += ["-e", item]
        return subprocess.run(cmd, cwd=self.elsewhere if installed else REPO,
                              env=self.installed_env if installed else self.checkout_env,
                              capture_output=True, text=True, timeout=900, check=False)

    def status(self, *extra: str) -> list[dict]:
        out = self.tmp / "status.json"
        out.unlink(missing_ok=True)
        result = self.command("status", f"summary_file={out}", *extra)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return json.loads(out.read_text())


def _build_and_install(runs: Runs) -> None:
    built = runs.tmp / "built"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(built), str(REPO)],
                   check=True, capture_output=True, cwd=REPO)
    tarball = next(built.glob("cloudtrain-ec2-*.tar.gz"))
    # Its dependencies (amazon.aws, ...) come with the ansible package here: no Galaxy.
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(runs.collections),
                    str(tarball)], check=True, capture_output=True, cwd=runs.elsewhere, env=runs.installed_env)
    assert (runs.collections / "ansible_collections" / "cloudtrain" / "ec2" / "playbooks" / "site.yml").is_file()


def _workers(pgid: int) -> list[int]:
    """ansible-playbook processes left in the killed controller's process group."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) == pgid and b"ansible-playbook" in (proc / "cmdline").read_bytes():
                left.append(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
    return left


@pytest.fixture(scope="module")
def runs(aws_emulator, standin, tmp_path_factory):
    aws_emulator.reset()
    runs = Runs(tmp_path_factory.mktemp("run-commands"), standin)
    _build_and_install(runs)
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)

    good = subprocess.Popen(
        [str(BIN / "ansible-playbook"), "cloudtrain.ec2.site", *runs.stand_in(), "-e",
         _extra(GOOD, runs.elsewhere / "artifacts")],
        cwd=runs.elsewhere, env=runs.installed_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    fail = subprocess.Popen(
        [str(BIN / "ansible-playbook"), "site.yml", *runs.stand_in(), "-e",
         _extra(FAIL, runs.tmp / "fail-artifacts", train_command=FAIL_COMMAND, s3_bucket=BUCKET)],
        cwd=REPO, env=runs.checkout_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    runs.procs.update(good=good, fail=fail)
    try:
        # The good run's controller dies once the training shows progress; the training goes on.
        lines = []
        for line in good.stdout:
            lines.append(line)
            if f"{GOOD}: epoch 1/" in line:
                break
        good.send_signal(signal.SIGKILL)
        good.wait()
        runs.outputs["good-killed"] = "".join(lines)
        assert f"{GOOD}: epoch 1/" in runs.outputs["good-killed"], runs.outputs["good-killed"][-3000:]
        deadline = time.monotonic() + 30
        while _workers(good.pid) and time.monotonic() < deadline:
            time.sleep(1)
        runs.outputs["workers-left"] = str(_workers(good.pid))
        # At once, while the training goes on: the same site run again, which re-attaches (the
        # commands below look at the run in progress meanwhile). keep_instance: the commands then
        # see a finished run on a running instance.
        runs.procs["reattach"] = subprocess.Popen(
            [str(BIN / "ansible-playbook"), "cloudtrain.ec2.site", *runs.stand_in(), "-e",
             _extra(GOOD, runs.elsewhere / "artifacts", keep_instance=True)],
            cwd=runs.elsewhere, env=runs.installed_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        yield runs
    finally:
        for proc in runs.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for name in (GOOD, FAIL):
            runs.command("stop", f"run_name={name}", "teardown_action=terminate")


def test_a_dead_controller_leaves_no_worker_polling(runs):
    assert runs.outputs["workers-left"] == "[]"


def test_status_of_a_run_in_progress(runs):
    [entry] = runs.status(f"run_name={GOOD}")
    assert entry["run"] == GOOD and entry["state"] == "running", entry
    assert entry["container"] == "running" and entry["exit_code"] is None, entry
    assert entry["last_progress"]["epoch"] >= 1 and entry["uptime_seconds"] >= 0, entry


def test_logs_of_a_run_in_progress(runs):
    result = runs.command("logs", f"run_name={GOOD}", "lines=500", installed=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # The default callback (no ansible.cfg here) prints the lines as JSON strings, quotes escaped.
    assert re.search(r'PROGRESS \{\\?"epoch\\?": 1,', out), out[-3000:]


def test_site_re_attaches_to_the_run_and_finishes_it(runs):
    out = runs.procs["reattach"].communicate(timeout=900)[0]
    assert runs.procs["reattach"].returncode == 0, out[-3000:]
    assert f"run {GOOD} (attach): exit code 0" in " ".join(out.split()), out[-3000:]
    metrics = json.loads((runs.elsewhere / "artifacts" / GOOD / "metrics.json").read_text())
    assert metrics["final_accuracy"] > 0.5, metrics


def test_two_runs_at_once_stay_apart(runs):
    every = runs.status("run_name=")
    by_run = {}
    for entry in every:
        by_run.setdefault(entry["run"], []).append(entry["instance_id"])
    assert set(by_run) == {GOOD, FAIL} and len(by_run[GOOD]) == len(by_run[FAIL]) == 1, every
    assert by_run[GOOD] != by_run[FAIL]
    keys = Path(yaml.safe_load(runs.vars_file.read_text())["provision_key_dir"])
    assert (keys / f"cloudtrain-{GOOD}.pem").is_file() and (keys / f"cloudtrain-{FAIL}.pem").is_file()


def test_a_failed_run_brings_home_what_exists_and_says_where(runs):
    out = runs.fail_output()
    artifacts = runs.tmp / "fail-artifacts" / FAIL
    assert runs.procs["fail"].returncode != 0, out[-3000:]
    assert "exited with code 3" in " ".join(out.split()), out[-3000:]
    assert (artifacts / "partial.txt").read_text() == "partial\n"
    assert (artifacts / "model.pt").read_text() == "weights\n"
    assert "PROGRESS" in (artifacts / "train.log").read_text()
    assert f"artifacts: {artifacts}" in " ".join(out.split()), out[-3000:]
    assert instance_states(FAIL) == ["stopped"]


def test_commands_on_the_failed_run(runs):
    runs.fail_output()
    [entry] = runs.status(f"run_name={FAIL}")
    assert entry["state"] == "stopped" and entry["container"] is None and entry["uptime_seconds"] is None, entry

    logs = runs.command("logs", f"run_name={FAIL}")
    flat = " ".join((logs.stdout + logs.stderr).split())
    assert logs.returncode != 0 and "has no running instance" in flat and "cloudtrain.ec2.results" in flat, flat[-2000:]

    fetched = runs.tmp / "fail-from-s3"
    result = runs.command("results", f"run_name={FAIL}", f"s3_bucket={BUCKET}", f"artifacts_dir={fetched}")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert (fetched / FAIL / "partial.txt").read_text() == "partial\n"
    assert "PROGRESS" in (fetched / FAIL / "train.log").read_text()
    assert f"from s3://{BUCKET}/{FAIL}/results/ in {fetched / FAIL}" in " ".join(out.split()), out[-3000:]


def test_commands_on_the_finished_run(runs):
    [entry] = runs.status(f"run_name={GOOD}")
    assert entry["state"] == "running" and entry["container"] == "exited" and entry["exit_code"] == 0, entry
    assert entry["last_progress"]["epoch"] == 10, entry

    fetched = runs.tmp / "good-results"
    result = runs.command("results", f"run_name={GOOD}", f"artifacts_dir={fetched}", installed=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert json.loads((fetched / GOOD / "metrics.json").read_text()) == json.loads(
        (runs.elsewhere / "artifacts" / GOOD / "metrics.json").read_text())
    assert f"from the instance in {fetched / GOOD}" in " ".join(out.split()), out[-3000:]

    # Following a run that has ended prints its whole log and returns.
    logs = runs.command("logs", f"run_name={GOOD}", "follow=true", installed=True)
    out = logs.stdout + logs.stderr
    assert logs.returncode == 0, out[-3000:]
    assert 'PROGRESS {"epoch": 10' in out, out[-3000:]


def test_stop_terminates_and_leaves_nothing(runs):
    keys = Path(yaml.safe_load(runs.vars_file.read_text())["provision_key_dir"])
    result = runs.command("stop", f"run_name={GOOD}", "teardown_action=terminate", installed=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert instance_states(GOOD) == ["terminated"]
    assert run_owned({"ec2": boto3.client("ec2", region_name="us-east-1"),
                      "iam": boto3.client("iam", region_name="us-east-1")}, GOOD) == {}
    assert not (keys / f"cloudtrain-{GOOD}.pem").exists()
    assert "left: nothing" in " ".join(out.split()), out[-3000:]
    # The other run is untouched.
    assert instance_states(FAIL) == ["stopped"] and (keys / f"cloudtrain-{FAIL}.pem").is_file()
    status = runs.command("status", f"run_name={GOOD}")
    assert f"no run {GOOD} in us-east-1" in status.stdout, status.stdout[-2000:]


def test_run_names(runs):
    refused = runs.command("status", json.dumps({"run_name": "mnist_1 x"}))
    flat = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode != 0 and "the characters ' ' '_' are not accepted" in flat, flat[-2000:]
    # No run_name: a default unique per user and run, shown at the start (here the run then stops
    # at its first check, before anything is created).
    named = subprocess.run([str(BIN / "ansible-playbook"), "site.yml", "-e", "@" + str(runs.vars_file),
                            "-e", "instance_type=m7i.large", "-e", "train_repo=/nonexistent/repo"],
                           cwd=REPO, env=dict(runs.checkout_env, USER="Ada.L"), capture_output=True, text=True,
                           timeout=300, check=False)
    flat = " ".join((named.stdout + named.stderr).split())
    assert "(the default name: give -e run_name=ada-l-m7i-large-" in flat, flat[-2000:]
