#!/usr/bin/env bash
# Run the image's `serve` on the model train_local.sh left, published on 127.0.0.1:$PORT (8080).
#   local_test/serve_local.sh [IMAGE]        (env: TEST_DIR, PORT, NETWORK=host where docker has no bridge)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${1:-imgclf:latest}
test_dir=${TEST_DIR:-$here/test_dir}
port=${PORT:-8080}

if [ "${NETWORK:-bridge}" = host ]; then
  network=(--network host -e SAGEMAKER_BIND_TO_PORT="$port" -e IMGCLF_HOST=127.0.0.1)
else
  network=(-p "127.0.0.1:$port:8080")
fi
exec docker run --rm "${network[@]}" -v "$test_dir/model:/opt/ml/model:ro" ${NAME:+--name "$NAME"} "$image" serve
