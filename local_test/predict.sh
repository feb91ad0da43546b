#!/usr/bin/env bash
# POST one image to /invocations and print the JSON answer (retrying while serve starts and loads the model).
#   local_test/predict.sh IMAGE_FILE [CONTENT_TYPE]     (env: PORT, TOP_K)
set -euo pipefail
file=${1:?usage: predict.sh IMAGE_FILE [CONTENT_TYPE]}
case "$file" in *.png) default=image/png ;; *) default=image/jpeg ;; esac
curl --fail-with-body -sS --retry 60 --retry-connrefused --retry-delay 1 -H "Content-Type: ${2:-$default}" --data-binary @"$file" \
  "http://127.0.0.1:${PORT:-8080}/invocations?top_k=${TOP_K:-3}"
echo
