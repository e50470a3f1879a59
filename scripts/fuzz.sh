#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang, AddressSanitizer and UndefinedBehaviorSanitizer (into
# build-asan/, by scripts/build_sanitize.sh), then runs each for SECONDS (default 30) from its committed seed corpus
# fuzz/corpus/TARGET/ (JSON inputs with fuzz/json.dict). Fails when any target crashes, leaks or has a sanitizer report; the
# input that caused it is left in build-asan/findings/. Leaks inside LibTorch are left out (scripts/lsan.supp).
# Targets run FUZZ_JOBS at a time (default: one per core).
#   bash scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_base64 fuzz_cifar fuzz_idx fuzz_image fuzz_import_config fuzz_npy fuzz_request fuzz_safetensors
  fuzz_sidecar fuzz_specs fuzz_torch_file)
bash scripts/build_sanitize.sh "${targets[@]}"
mkdir -p build-asan/findings
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$PWD/scripts/lsan.supp
# One target per core at a time (FUZZ_JOBS): each fuzzer runs on one thread; their reports are printed in order.
jobs=${FUZZ_JOBS:-$(nproc)}
fuzz_one() {
  local t=$1 work=build-asan/corpus/$1 dict=()
  mkdir -p "$work"
  # New inputs go to the work corpus; the committed seeds stay as they are.
  case $t in fuzz_request | fuzz_sidecar | fuzz_import_config | fuzz_specs) dict=(-dict=fuzz/json.dict) ;; esac
  ./build-asan/fuzz/$t "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix=build-asan/findings/$t- "$work" fuzz/corpus/$t > build-asan/findings/$t.log 2>&1 || true
}
running=0
for t in "${targets[@]}"; do
  rm -f build-asan/findings/$t.log
  fuzz_one "$t" &
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait
failed=0
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${seconds}s" >&2
  grep -E "^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" build-asan/findings/$t.log >&2 || true
  if ls build-asan/findings/$t-* > /dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls build-asan/findings/$t-* | head -1) (its output: build-asan/findings/$t.log)" >&2
    failed=1
  fi
done
[ $failed = 0 ] || exit 1
echo "fuzz: no crash in ${targets[*]}" >&2
