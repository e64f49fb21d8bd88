"""Offline stand-in for pip's get-pip.py, which ansible-test downloads to seed its venvs.

ansible-test runs it as `python get_pip.py [pip options] pip==X [setuptools==Y] [--no-setuptools]
[--no-wheel]`. The download needs the internet; this does the same from the interpreter's bundled
ensurepip wheel and the configured package index.
"""
import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

ensurepip.bootstrap(upgrade=True)
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
# ansible-test runs this with a trimmed environment: keep the machine's CA bundle (a TLS proxy may
# sit between this machine and the package index).
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
if os.path.exists(SYSTEM_CA) and "PIP_CERT" not in os.environ:
    args = ["--cert", SYSTEM_CA, *args]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
