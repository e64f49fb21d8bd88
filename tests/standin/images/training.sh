#!/bin/sh
# Recipe of the stand-in for the Deep Learning Containers PyTorch CPU training image, run by
# images.py inside a container of the base image with the host's pip configuration and local
# wheel folders mounted read-only; the container is then committed as the image.
# Like the real images: a current torch and torchvision, Python 3.11+ answering to both `python`
# and `python3`, pip, and git. The framework comes from the wheels on this machine's disk
# (torch 2.14.1 is a CUDA build: it runs on the CPU and carries the CUDA libraries, as the real
# GPU images do); numpy, pillow and matplotlib from the host's pip index.
set -eu
: "${TORCH_VERSION:?}" "${TORCHVISION_VERSION:?}"
apt-get update
apt-get install -y python3 python3-venv git ca-certificates
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# A venv, not Debian's externally managed Python: users' requirements install with plain pip.
python3 -m venv /opt/venv
/opt/venv/bin/pip install --no-cache-dir --quiet "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" numpy matplotlib
# Installs from users' requirements files must never leave this machine (the stand-in has no
# internet): local files and folders install, index look-ups fail at once.
printf '[global]\nno-index = true\n' > /etc/pip.conf
/opt/venv/bin/python -c 'import torch, torchvision, matplotlib; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
