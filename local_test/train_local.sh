#!/usr/bin/env bash
# Run the image's `train` as SageMaker would: test_dir's input/model/output mounted under /opt/ml,
# the sample data as the train/valid/test channels, host name algo-1, no network.
#   local_test/train_local.sh [IMAGE]        (env: TEST_DIR, DATA)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${1:-imgclf:latest}
test_dir=${TEST_DIR:-$here/test_dir}
data=${DATA:-$here/data}

# A new job: empty model/ and output/; checkpoints/ is kept, as SageMaker restores it (delete it to start over).
rm -rf "$test_dir/model" "$test_dir/output"
mkdir -p "$test_dir/model" "$test_dir/output" "$test_dir/checkpoints"
channels=()
for channel in train valid test; do
  [ -d "$data/$channel" ] && channels+=(-v "$data/$channel:/opt/ml/input/data/$channel:ro")
done
docker run --rm --network none --hostname algo-1 --add-host algo-1:127.0.0.1 \
  -v "$test_dir/input/config:/opt/ml/input/config:ro" "${channels[@]}" \
  -v "$test_dir/model:/opt/ml/model" -v "$test_dir/output:/opt/ml/output" \
  -v "$test_dir/checkpoints:/opt/ml/checkpoints" ${NAME:+--name "$NAME"} \
  "$image" train
echo "model in $test_dir/model"
