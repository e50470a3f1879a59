#!/usr/bin/env bash
# Configures build-asan/ (clang, AddressSanitizer + UndefinedBehaviorSanitizer, libFuzzer coverage; installs clang and
# libfuzzer-14-dev when missing) and builds the given targets (all when none are given). Used by scripts/fuzz.sh and
# scripts/test.sh --sanitize.
#   bash scripts/build_sanitize.sh [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."
for p in clang libfuzzer-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    echo "sanitize: installing $p" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
# -O1 and line tables only: stack traces keep file and line, and the build is quicker than -O2 -g (CI runs it).
[ -f build-asan/CMakeCache.txt ] || cmake -S . -B build-asan "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
  -DCMAKE_CXX_COMPILER=clang++ -DDDPM_SANITIZE=ON > /dev/null
if [ $# -gt 0 ]; then
  cmake --build build-asan --parallel "$(nproc)" --target "$@"
else
  cmake --build build-asan --parallel "$(nproc)"
fi
