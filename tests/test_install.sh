#!/usr/bin/env bash
# The CMake package as a user meets it: install the build tree under a fresh prefix, build examples/ against it with
# find_package(ddpm), run the example on the shipped model and check the PNG it writes.
#   test_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/lib/cmake/ddpm/ddpmConfig.cmake"
test -f "$work/prefix/include/ddpm/store/model.h"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$src/examples" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/sample_grid" "$src/models/fashion-mnist.safetensors" "$work/grid.png" ddim 4 2 2>"$work/log"
grep -q "20 samples (ddim, 4 steps)" "$work/log"
# A PNG of 10 rows × 2 columns of 32-pixel images with 2-pixel gaps, at zoom 3: 3·(2·34+2) × 3·(10·34+2).
/usr/bin/python3 - "$work/grid.png" <<'PY'
import struct, sys
b = open(sys.argv[1], 'rb').read()
assert b[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
w, h = struct.unpack('>II', b[16:24])
assert (w, h) == (210, 1026), (w, h)
print('grid', w, 'x', h)
PY
# A bad model path is one line on stderr and exit status 1.
if "$work/build/sample_grid" "$work/none.safetensors" "$work/x.png" 2>"$work/err"; then exit 1; fi
grep -q "none.safetensors" "$work/err"
echo "install test passed"
