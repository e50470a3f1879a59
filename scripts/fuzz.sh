#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang, AddressSanitizer and UndefinedBehaviorSanitizer (into
# build-fuzz/), then runs each for SECONDS (default 30) from its committed seed corpus fuzz/corpus/TARGET/. Fails on
# the first crash, leak or sanitizer report; the input that caused it is left in build-fuzz/findings/.
#   bash scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_base64 fuzz_image fuzz_npy fuzz_safetensors fuzz_specs)
for p in clang libfuzzer-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    echo "fuzz: installing $p"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
[ -f build-fuzz/CMakeCache.txt ] || cmake -S . -B build-fuzz "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DDDPM_FUZZ=ON > /dev/null
cmake --build build-fuzz --parallel "$(nproc)" --target "${targets[@]}"
mkdir -p build-fuzz/findings
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${targets[@]}"; do
  work=build-fuzz/corpus/$t
  mkdir -p "$work"
  echo "fuzz: $t for ${seconds}s" >&2
  # New inputs go to the work corpus; the committed seeds stay as they are.
  ./build-fuzz/fuzz/$t -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/findings/$t- "$work" fuzz/corpus/$t 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" >&2 \
    || true
  if ls build-fuzz/findings/$t-* > /dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls build-fuzz/findings/$t-* | head -1)" >&2
    exit 1
  fi
done
echo "fuzz: no crash in ${targets[*]}" >&2
