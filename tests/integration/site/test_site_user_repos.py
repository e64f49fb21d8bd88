"""site.yml trains the user's own repository, unchanged: the blog's (a real client, from its git
bundle) and a script in a subfolder with its own requirements file; bad input fails clearly.

Each run goes through the whole site.yml against the stand-in; the emulator is asked afterwards
what the run left behind.
"""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from site_helpers import DATA, REPO, instance_states, run_site

BLOG_BUNDLE = REPO.parent / "shared" / "clients" / "python-pytorch-cnn-mnist.bundle"
BLOG_COMMIT = "1fdd93e"


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_the_blogs_repository_trains_unchanged(aws, standin, tmp_path):
    # Exactly the variables the README gives for the blog's repository.
    result = run_site(standin, "user-blog", tmp_path, train_args=["--epochs", "1", "--save-model"],
                      train_repo=str(BLOG_BUNDLE), train_version=BLOG_COMMIT, data_src=str(DATA))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    artifacts = tmp_path / "artifacts" / "user-blog"
    assert (artifacts / "mnist_cnn.pt").stat().st_size > 100_000  # the blog's Net, about 4.8 MB
    log = _read(artifacts / "train.log")
    assert "Test set: Average loss" in log and "Train Epoch: 1" in log
    assert instance_states("user-blog") == ["stopped"]


def _tiny_wheel(folder: Path) -> Path:
    """A real, installable wheel of a one-module package (no index needed to install it)."""
    name = "cloudtrain_fixture"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    files = {
        f"{name}.py": "GREETING = 'installed from the requirements file'\n",
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{file},,\n" for file in files) + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for file, text in files.items():
            wheel.writestr(file, text)
        wheel.writestr(f"{name}-1.0.dist-info/RECORD", record)
    return path


SUBDIR_SCRIPT = """\
import json, os, sys
import torch, torchvision
import cloudtrain_fixture

out = os.environ["CLOUDTRAIN_OUTPUT_DIR"]
os.makedirs("samples", exist_ok=True)
with open("samples/first.txt", "w") as handle:
    handle.write("a sample")
torch.save({"w": torch.zeros(3)}, "weights.pth")
with open(os.path.join(out, "metrics.json"), "w") as handle:
    json.dump({"torch": torch.__version__, "greeting": cloudtrain_fixture.GREETING,
               "data": sorted(os.listdir(os.environ["CLOUDTRAIN_DATA_DIR"])), "cwd": os.getcwd(),
               "argv": sys.argv[1:]}, handle)
print("trained with torch", torch.__version__)
sys.exit(int(os.environ.get("FIXTURE_EXIT", "0")))
"""


@pytest.fixture(scope="module")
def subdir_repo(tmp_path_factory):
    """A git repository with its training script in examples/tiny/, next to a requirements file
    that pins an old torch (which must be left out) and installs a local wheel."""
    repo = tmp_path_factory.mktemp("subdir-repo")
    tiny = repo / "examples" / "tiny"
    (tiny / "wheels").mkdir(parents=True)
    wheel = _tiny_wheel(tiny / "wheels")
    (tiny / "train.py").write_text(SUBDIR_SCRIPT)
    (tiny / "requirements.txt").write_text(f"torch==2.2.2\n./wheels/{wheel.name}\n")
    (tiny / "broken-requirements.txt").write_text("./wheels/not-there-1.0-py3-none-any.whl\n")
    for argv in (["init", "-q", "-b", "main"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tiny"], ["tag", "v1"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True)
    return repo


def test_a_script_in_a_subfolder_with_its_requirements(aws, standin, tmp_path, subdir_repo):
    # Three runs of one run name, so one instance: success, a failing command, a failing install.
    run = "user-subdir"
    code = {"train_repo": str(subdir_repo), "train_version": "v1", "train_subdir": "examples/tiny"}
    result = run_site(standin, run, tmp_path / "ok", train_requirements="requirements.txt",
                      train_args=["--flag", "value"], train_outputs=["samples/**", "nothing-*.csv"], **code)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    artifacts = tmp_path / "ok" / "artifacts" / run
    metrics = json.loads(_read(artifacts / "metrics.json"))
    # The image's torch stayed (torch==2.2.2 was left out); the local wheel was installed.
    assert metrics["torch"].startswith("2.14")
    assert metrics["greeting"] == "installed from the requirements file"
    assert metrics["cwd"] == "/workspace/code/examples/tiny" and metrics["argv"] == ["--flag", "value"]
    assert "MNIST" in metrics["data"]
    assert (artifacts / "weights.pth").is_file() and _read(artifacts / "samples" / "first.txt") == "a sample"
    assert "'torch==2.2.2' left out" in _read(artifacts / "train.log")
    assert "nothing-*.csv matched nothing" in out
    assert instance_states(run) == ["stopped"]

    # The command exits non-zero after writing outputs: they come home with the log.
    result = run_site(standin, run, tmp_path / "fails", train_requirements="requirements.txt",
                      train_env={"FIXTURE_EXIT": "3"}, **code)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "exited with code 3" in out, out[-3000:]
    artifacts = tmp_path / "fails" / "artifacts" / run
    assert (artifacts / "weights.pth").is_file() and (artifacts / "metrics.json").is_file()
    assert "trained with torch" in _read(artifacts / "train.log")
    assert instance_states(run) == ["stopped"]

    # A requirements install that fails: a clear line in the error, the training never starts.
    result = run_site(standin, run, tmp_path / "no-install", train_requirements="broken-requirements.txt", **code)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "installing broken-requirements.txt failed" in out, out[-3000:]
    assert "trained with torch" not in _read(tmp_path / "no-install" / "artifacts" / run / "train.log")
    assert instance_states(run) == ["stopped"]


def _assert_refused_before_launch(result, run_name: str, message: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert message in out, out[-3000:]
    assert instance_states(run_name) == []  # nothing was created


def test_bad_input_is_refused_before_anything_is_created(aws, standin, tmp_path, subdir_repo):
    missing = tmp_path / "no-such-repo"
    _assert_refused_before_launch(run_site(standin, "bad-repo", tmp_path, train_repo=str(missing)),
                                  "bad-repo", f"train_repo {missing} is not a git repository or bundle")
    _assert_refused_before_launch(run_site(standin, "bad-version", tmp_path, train_repo=str(subdir_repo),
                                           train_version="v9"),
                                  "bad-version", "train_version v9 does not exist in train_repo")
    _assert_refused_before_launch(run_site(standin, "bad-subdir", tmp_path, train_repo=str(subdir_repo),
                                           train_version="v1", train_subdir="examples/huge"),
                                  "bad-subdir", "train_subdir examples/huge does not exist at v1")
    # No PyTorch training image runs on a Graviton CPU type.
    _assert_refused_before_launch(run_site(standin, "bad-type", tmp_path, instance_type="m7g.large"),
                                  "bad-type", "no Deep Learning Containers PyTorch training image runs on m7g.large")
