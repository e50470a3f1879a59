#!/usr/bin/env bash
# The performance benchmark (issue 6): builds bench/bench_unet and runs it on both U-Nets against the machine's
# convolution peak and PyTorch eager (python3-torch), with the scaling tables. Extra arguments go to bench_unet,
# e.g. `bash scripts/bench.sh --config fashion-mnist --iters 10`. Run it on a quiet machine; it takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh -DDDPM_BUILD_BENCH=ON
mkdir -p runs
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--config all --scaling)
./build/bench/bench_unet "${args[@]}" --json runs/bench.json
echo "bench: runs/bench.json"
