# Stand-in for an EC2 instance: systemd as PID 1, python3 for Ansible (python3-apt for the apt
# module, as on Ubuntu AMIs), and the AMI's login user `ec2-user` with passwordless sudo the way
# cloud-init sets it up. Docker is deliberately absent: the docker role installs it. The apt
# indexes stay, as on a cloud image: without them apt's cache_valid_time would trust the empty
# lists folder's fresh timestamp and find no packages.
FROM {base}
RUN apt-get update \
 && apt-get install -y systemd systemd-sysv dbus python3 python3-apt sudo ca-certificates iproute2 procps \
 && apt-get clean \
 && useradd --create-home --shell /bin/bash --user-group ec2-user \
 && echo 'ec2-user ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users \
 && chmod 0440 /etc/sudoers.d/90-cloud-init-users \
 # On EC2 root reaches the instance profile like everyone else; here the "profile" is the
 # container's environment (standin.py sets it), which sudo would otherwise drop.
 && echo 'Defaults env_keep += "AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_REGION AWS_ENDPOINT_URL AWS_EC2_METADATA_DISABLED"' \
      > /etc/sudoers.d/95-standin-instance-profile \
 && chmod 0440 /etc/sudoers.d/95-standin-instance-profile \
 # Units that make no sense (or hang) inside a container.
 && systemctl mask getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
      systemd-firstboot.service systemd-remount-fs.service sys-kernel-config.mount sys-kernel-debug.mount \
      sys-kernel-tracing.mount dev-hugepages.mount systemd-logind.service \
 && rm -f /etc/machine-id && touch /etc/machine-id \
 # Safety net: this "instance" shares the host's network namespace, and a Docker daemon started
 # there with its default bridge and iptables rules would rewire the host. The docker role merges
 # its settings over an existing daemon.json, so these hold even when a play forgets to pass them.
 && mkdir -p /etc/docker \
 && echo '{"bridge": "none", "iptables": false, "ip-masq": false, "ip-forward": false}' > /etc/docker/daemon.json
ENV container=docker
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
