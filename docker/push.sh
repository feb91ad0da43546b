#!/usr/bin/env bash
# Push IMAGE:TAG to Amazon ECR as :TAG and :GIT_SHA with boto3 (imgclf_launch.push: no AWS CLI needed);
# creates the repository if missing. Region from AWS_REGION or your AWS config.
#   docker/push.sh imgclf latest 1a2b3c4
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
exec env PYTHONPATH="$root/scripts${PYTHONPATH:+:$PYTHONPATH}" "$python" -m imgclf_launch.push \
  "${1:?image name}" "${2:-latest}" "${3:-$(git -C "$root" rev-parse --short HEAD)}"
