#!/usr/bin/env bash
# Build the image on a CI-like machine: no engine running, no registry to pull from,
# and PyPI behind a TLS-intercepting proxy whose CA only the host trusts.
#   docker/ci-build.sh imgclf:latest
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-imgclf:latest}
base=$(docker/local-engine.sh)

# Each build holds ~13 GB (builder stage + image): drop earlier builds of this repository and
# dangling builder layers first, so repeated runs on one machine do not fill its disk.
# Finished test containers of those builds (SDK local mode leaves its own) keep their layers too.
for old in $(docker images --format '{{.Repository}}:{{.Tag}}' | grep "^${image%%:*}:" || true); do
    docker ps -aq --filter "ancestor=$old" --filter status=exited --filter status=created | xargs -r docker rm >/dev/null
    docker rmi -f "$old" >/dev/null || true
done
docker image prune -f >/dev/null

args=(BASE_IMAGE="$base")
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then args+=(CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt); fi
make build IMAGE="${image%%:*}" TAG="${image##*:}" "${args[@]}"
docker image prune -f >/dev/null  # the builder stage, ~7 GB the tests never use
