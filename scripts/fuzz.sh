#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang, AddressSanitizer and UndefinedBehaviorSanitizer (into
# build-asan/, by scripts/build_sanitize.sh), then runs each for SECONDS (default 30) from its committed seed corpus
# fuzz/corpus/TARGET/ (JSON inputs with fuzz/json.dict). Fails on the first crash, leak or sanitizer report; the
# input that caused it is left in build-asan/findings/. Leaks inside LibTorch are left out (scripts/lsan.supp).
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
for t in "${targets[@]}"; do
  work=build-asan/corpus/$t
  mkdir -p "$work"
  echo "fuzz: $t for ${seconds}s" >&2
  # New inputs go to the work corpus; the committed seeds stay as they are.
  dict=()
  case $t in fuzz_request | fuzz_sidecar | fuzz_import_config | fuzz_specs) dict=(-dict=fuzz/json.dict) ;; esac
  ./build-asan/fuzz/$t "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix=build-asan/findings/$t- "$work" fuzz/corpus/$t 2>&1 | grep -E "^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" >&2 \
    || true
  if ls build-asan/findings/$t-* > /dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls build-asan/findings/$t-* | head -1)" >&2
    exit 1
  fi
done
echo "fuzz: no crash in ${targets[*]}" >&2
