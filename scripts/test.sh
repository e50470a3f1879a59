#!/usr/bin/env bash
# Quickstart command 2: installs the dependencies, builds, and runs every test.
#   bash scripts/test.sh                 the suite (Release, g++) in build/
#   bash scripts/test.sh --sanitize      the suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang) in
#                                        build-asan/, except the install test (it builds with g++ against the
#                                        installed package) and the end-to-end server tests (Python drives them)
#   bash scripts/test.sh --sanitize-ci   the same for CI's subset: the areas that read what users hand the program
#                                        (files, data, checkpoints, imports) and the numerical core (schedules, the
#                                        process, memory bounds); not the samplers (225 s under ASan) nor the tests
#                                        that run the CLI
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mode=${1:-}
if [ -z "$mode" ]; then
  bash scripts/build.sh
  ctest --test-dir build --output-on-failure --parallel "$(nproc)" --timeout 1200
  exit 0
fi
case "$mode" in
  --sanitize) areas=$(sed -n 's/^set(DDPM_TESTS \(.*\))$/\1/p' tests/CMakeLists.txt) ;;
  --sanitize-ci) areas="resources schedule diffusion torch_file import store io images" ;;
  *) echo "test.sh: unknown option '$mode' (use --sanitize or --sanitize-ci)" >&2; exit 2 ;;
esac
targets=()
[ "$mode" = --sanitize ] && targets+=(ddpm_cli)  # the CLI's own tests run it
for a in $areas; do targets+=("test_$a"); done
bash scripts/build_sanitize.sh "${targets[@]}"
# LibTorch and its OpenMP runtime are not instrumented; what they keep until exit is not a leak of this project.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export LSAN_OPTIONS=suppressions=$PWD/scripts/lsan.supp
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
labels=$(echo $areas | tr ' ' '|')
ctest --test-dir build-asan --output-on-failure --parallel "$(nproc)" --timeout 2400 -L "^($labels)\$"
