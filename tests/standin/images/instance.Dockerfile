# Stand-in for an EC2 instance: systemd as PID 1, sshd, python3 for Ansible (python3-apt for the apt
# module, as on Ubuntu AMIs), a current boto3 as the AMIs carry (Debian's 1.26 predates the
# AWS_ENDPOINT_URL variable), and the AMI's login user `ec2-user` with passwordless sudo the way
# cloud-init sets it up. instance/cloud-init.py plays cloud-init: at boot it installs the key pair's
# public half and runs the user data, both read from the instance metadata service.
# Docker is deliberately absent: the docker role installs it. The apt indexes stay, as on a cloud
# image: without them apt's cache_valid_time would trust the empty lists folder's fresh timestamp
# and find no packages.
FROM {base}
COPY instance/ /tmp/instance/
RUN apt-get update \
 && apt-get install -y systemd systemd-sysv dbus python3 python3-apt python3-pip sudo ca-certificates \
      iproute2 procps openssh-server \
 && apt-get clean \
 && pip install --no-index --find-links /tmp/instance/wheels --break-system-packages --no-cache-dir \
      -r /tmp/instance/requirements.txt \
 && useradd --create-home --shell /bin/bash --user-group ec2-user \
 && echo 'ec2-user ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users \
 && chmod 0440 /etc/sudoers.d/90-cloud-init-users \
 # The stand-in's endpoints (/etc/environment, read at login) reach root's processes too.
 && echo 'Defaults env_keep += "AWS_EC2_METADATA_SERVICE_ENDPOINT AWS_ENDPOINT_URL"' > /etc/sudoers.d/95-cloudtrain-standin \
 && chmod 0440 /etc/sudoers.d/95-cloudtrain-standin \
 && install -D -m 0644 /tmp/instance/cloud-init.py /usr/local/lib/cloudtrain-standin/cloud-init.py \
 && install -m 0644 /tmp/instance/cloud-init.service /tmp/instance/cloud-final.service /etc/systemd/system/ \
 && systemctl enable cloud-init.service cloud-final.service ssh.service \
 && rm -rf /tmp/instance \
 # What differs per instance (the sshd address, the metadata and AWS endpoints) is in a folder the
 # stand-in mounts at boot: the instance's "network". sshd: keys only, no DNS look-ups.
 && ln -sf /etc/cloudtrain-standin/environment /etc/environment \
 && ln -s /etc/cloudtrain-standin/sshd.conf /etc/ssh/sshd_config.d/50-cloudtrain-standin.conf \
 && printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n' > /etc/ssh/sshd_config.d/40-cloud-image.conf \
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
