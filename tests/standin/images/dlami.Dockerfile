# The golden AMI's instance image: the instance image as the Deep Learning Base AMI ships it, Docker
# installed and enabled at boot (the docker role only checks it: docker_skip_install_when_present),
# plus what the collection's roles install on a fresh instance, as an AMI baked from one holds it:
# the docker role's host Python packages (python3-boto3, python3-requests) and the train role's git
# and rsync. Debian's packages, the same ones the roles install. /etc/docker/daemon.json (no bridge,
# no iptables) comes from the instance image; the postinst's attempt to start the daemon inside the
# build fails harmlessly (no init running).
FROM {base}
RUN apt-get update \
 && apt-get install -y docker.io python3-boto3 python3-requests git rsync \
 && apt-get clean \
 && systemctl enable docker.service
