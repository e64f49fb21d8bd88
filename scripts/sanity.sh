#!/usr/bin/env bash
# ansible-test sanity needs the collection at .../ansible_collections/cloudtrain/ec2 and its
# dependencies beside it: copy the tracked tree there, link amazon.aws and community.docker from
# the venv's `ansible` bundle, and run every sanity test in ansible-test's own venvs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
mkdir -p "$repo/.cache"
work=${SANITY_ROOT:-$(mktemp -d "$repo/.cache/sanity.XXXXXX")}
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/cloudtrain/ec2
bundle=$("$venv/bin/python" -c 'import ansible_collections, os; print(os.path.dirname(ansible_collections.__file__) if ansible_collections.__file__ else list(ansible_collections.__path__)[0])')

# ansible-test seeds its venvs with get-pip.py from the internet; the offline equivalent:
pip_version=$("$venv/bin/python" -c 'import re, ansible_test, pathlib; p = pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py"; print(re.search(r"pip=.([0-9.]+).", p.read_text()).group(1))')
mkdir -p ~/.ansible/test/cache
install -m 0644 "$repo/scripts/get_pip_offline.py" ~/.ansible/test/cache/get_pip_"${pip_version//./_}".py

rm -rf "$dest"
mkdir -p "$dest" "$work/ansible_collections/amazon" "$work/ansible_collections/community"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | grep -zv '^\.collections/' \
  | xargs -0 -I{} sh -c 'test -e "{}" && cp -P --parents "{}" "'"$dest"'"' )
ln -sfn "$bundle/amazon/aws" "$work/ansible_collections/amazon/aws"
ln -sfn "$bundle/community/docker" "$work/ansible_collections/community/docker"

cd "$dest"
git init -q . && git add -A
# Arguments pass through: e.g. `--test pylint` or paths to check only those.
"$venv/bin/ansible-test" sanity --python 3.11 --venv --color no "$@"
