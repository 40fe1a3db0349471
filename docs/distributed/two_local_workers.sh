#!/usr/bin/env bash
# One multi_worker training with two workers on this machine (loopback), the same
# training on one device, and the largest difference between their weights.
#
#   bash docs/distributed/two_local_workers.sh [OUT_DIR] [STEPS]
#
# Each worker is the command a machine of a real cluster runs; only TF_CONFIG's
# task index differs. PORT0 and PORT1 choose the ports (defaults 23456, 23457).
set -euo pipefail
out=${1:-runs/two_workers}
steps=${2:-20}
port0=${PORT0:-23456}
port1=${PORT1:-23457}
cluster="\"cluster\": {\"worker\": [\"127.0.0.1:$port0\", \"127.0.0.1:$port1\"]}"

# text_cpu.gin's batch of 3 does not divide over 2 replicas: both runs take 4.
train() {
  tf-metainit-train --gin_file=image/text_cpu.gin \
    --gin_bindings="meta_train.num_iterations = $steps" \
    --gin_bindings="meta_train.outer_batch_size = 4" "$@"
}

for index in 0 1; do
  TF_CONFIG="{$cluster, \"task\": {\"type\": \"worker\", \"index\": $index}}" \
    train --root_dir="$out/multi_worker" \
      --gin_bindings="train/distribute.strategy = 'multi_worker'" &
  pids[index]=$!
done
wait "${pids[0]}"
wait "${pids[1]}"

train --root_dir="$out/one_device"

python - "$out" <<'PY'
import sys
import numpy as np
import tensorflow as tf

def weights(run):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(f"{run}/train/checkpoints"))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.startswith(("field/", "inner_lr/"))}

two, one = weights(f"{sys.argv[1]}/multi_worker"), weights(f"{sys.argv[1]}/one_device")
assert two.keys() == one.keys()
print(f"largest weight difference, two workers vs one device: "
      f"{max(np.abs(two[k] - one[k]).max() for k in one):.2e}")
PY
