"""Install a training repository's requirements in its container, then run its command.

    python install_requirements.py [--keep PACKAGE ...] REQUIREMENTS -- COMMAND [ARG ...]

The train role puts this in front of the user's command when train_requirements is set. Lines
naming a package of the image's framework (--keep: torch, torchvision, torchaudio) are left out
with a warning: a pin such as torch==2.2.2 in a frozen requirements file must neither replace the
image's build nor download gigabytes. The installed framework versions are also given to pip as
constraints, so a package that needs another torch fails with pip's reason instead of
downgrading it. Nested files (-r other.txt) are installed as they are.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Options naming another file, which pip reads relative to the file that names it.
_NESTED = re.compile(r"^(-r|--requirement|-c|--constraint)(\s+|=)(\S+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def split_framework(lines: list[str], keep: set[str], base: str) -> tuple[list[str], list[str]]:
    """(lines to install, lines left out because they name a framework package).

    Nested files are made absolute against base, the folder of the original file, because the
    filtered copy lives elsewhere.
    """
    install, left_out = [], []
    for line in lines:
        text = line.split(" #", 1)[0].strip()
        nested = _NESTED.match(text)
        match = _NAME.match(text) if text and not text.startswith(("#", "-")) else None
        if match and _canonical(match.group(1)) in keep:
            left_out.append(text)
        elif nested:
            install.append(f"{nested.group(1)} {os.path.join(base, nested.group(3))}")
        else:
            install.append(line.rstrip("\n"))
    return install, left_out


def framework_constraints(keep: set[str]) -> list[str]:
    """name==version of each framework package installed in the image."""
    pins = []
    for name in sorted(keep):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("requirements")
    parser.add_argument("--keep", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run after the install")
    keep = {_canonical(name) for name in args.keep}
    try:
        with open(args.requirements, encoding="utf-8") as handle:
            install, left_out = split_framework(handle.readlines(), keep,
                                                os.path.dirname(os.path.abspath(args.requirements)))
    except OSError as exc:
        print(f"cloudtrain: cannot read the requirements file {args.requirements}: {exc.strerror}", flush=True)
        return 2
    pins = framework_constraints(keep)
    for line in left_out:
        print(f"cloudtrain: WARNING: {args.requirements}: '{line}' left out: the image's "
              f"{', '.join(pins) or 'framework'} stays", flush=True)
    with tempfile.TemporaryDirectory(prefix="cloudtrain-req-") as tmp:
        filtered, constraints = os.path.join(tmp, "requirements.txt"), os.path.join(tmp, "constraints.txt")
        with open(filtered, "w", encoding="utf-8") as handle:
            handle.write("\n".join(install) + "\n")
        with open(constraints, "w", encoding="utf-8") as handle:
            handle.write("\n".join(pins) + "\n")
        print(f"cloudtrain: installing {args.requirements} (framework kept: {', '.join(pins) or 'none found'})", flush=True)
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                              "--root-user-action=ignore", "-r", filtered, "-c", constraints], check=False)
    if pip.returncode != 0:
        print(f"cloudtrain: installing {args.requirements} failed (pip exit code {pip.returncode}); "
              "the training did not start", flush=True)
        return pip.returncode
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 127  # not reached: execvp replaces the process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
