#!/usr/bin/env bash
# What the local stand-in needs from this machine: Docker (engine + a local registry binary),
# debootstrap for the image builds, htpasswd and openssl for the registry's auth and TLS.
# The ShellCheck program lets ansible-test sanity check the shell scripts. rsync is what
# ansible.posix.synchronize runs on the controller (the train role sends code and data and brings
# results home with it).
# Installs what is missing and starts dockerd when none answers. Needs root.
set -euo pipefail

packages=(docker.io docker-registry debootstrap apache2-utils openssl shellcheck rsync)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "host-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "host-setup: starting dockerd"
  mkdir -p /var/log
  # --bridge=none: every container uses host networking and only loopback traffic happens;
  # a daemon with a bridge would also break the nested daemon of the instance container.
  setsid dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/cloudtrain-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "host-setup: dockerd did not start; see /var/log/cloudtrain-dockerd.log" >&2; exit 1; }
fi
echo "host-setup: docker $(docker version --format '{{.Server.Version}}') ready"
