#!/usr/bin/env bash
# The local demo (`make demo`): the whole site.yml run on this machine, no AWS account.
#   tests/standin/demo.sh [extra ansible-playbook arguments, e.g. -e epochs=3 -v]
# 1. MNIST split from ../shared/data/mnist into .cache/demo/data (torchvision raw layout)
# 2. the stand-in: AWS emulator, ECR registry with the training image, instance container
# 3. ansible-playbook site.yml with tests/standin/demo.yml against the stand-in
# 4. where the artifacts are
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
bin="$repo/${VENV:-.venv}/bin"
export PATH="$bin:$PATH" ANSIBLE_CONFIG="$repo/ansible.cfg" PYTHONUNBUFFERED=1
data="$repo/.cache/demo/data"
artifacts="${ARTIFACTS_DIR:-$repo/artifacts}"

echo "== data: MNIST split in $data"
"$bin/python" hacking/make_mnist_split.py --source "$repo/../shared/data/mnist" --dest "$data"

echo "== stand-in: emulator, registry, instance"
# STANDIN_INSTANCE: another instance container than the default one (its vars file is its own).
instance=${STANDIN_INSTANCE:-}
"$bin/python" tests/standin/standin.py up ${instance:+--instance-name "$instance"}
state=${CLOUDTRAIN_STANDIN_STATE:-$repo/.cache/standin}
standin_vars="$state/vars${instance:+-$instance}.yml"

# Every AWS call of the controller goes to the emulator (and nowhere else).
eval "$("$bin/python" tests/standin/emulator.py env)"
# ... and the controller trusts the stand-in's registry, as it trusts ECR's certificate on AWS.
eval "$("$bin/python" tests/standin/standin.py env)"

echo "== ansible-playbook site.yml"
"$bin/ansible-playbook" site.yml \
  -e @tests/standin/demo.yml \
  -e "@$standin_vars" \
  -e "data_src=$data" -e "artifacts_dir=$artifacts" \
  "$@"

run_name=$(sed -n 's/^run_name: *//p' tests/standin/demo.yml)
for arg in "$@"; do case $arg in run_name=*) run_name=${arg#run_name=};; esac; done
echo "== artifacts: $artifacts/$run_name"
ls -l "$artifacts/$run_name"
