#!/usr/bin/env bash
# Prepare a machine that has no Docker engine and cannot pull images (a CI-like
# machine): install the engine, start it, and build a Debian base image with debootstrap.
# Prints the base image's name. Idempotent: reuses a running engine and an existing base.
#
#   BASE=$(docker/local-engine.sh)    # then: make build BASE_IMAGE=$BASE
set -euo pipefail

BASE_NAME=${BASE_NAME:-imgclf-base:bookworm}

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker-compose >/dev/null; then
  echo "installing docker.io, docker-compose, debootstrap" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >&2
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (no bridge, no iptables: containers use --network host or none)" >&2
  nohup dockerd --bridge=none --iptables=false >/tmp/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/dockerd.log" >&2; exit 1; }
fi

if ! docker image inspect "$BASE_NAME" >/dev/null 2>&1; then
  echo "building $BASE_NAME with debootstrap" >&2
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" http://deb.debian.org/debian >&2
  tar -C "$root" -c . | docker import - "$BASE_NAME" >&2
  rm -rf "$root"
fi
echo "$BASE_NAME"
