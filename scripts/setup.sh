#!/usr/bin/env bash
# Installs every system dependency of ddpm from Debian's packages. Idempotent: a second run installs nothing.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-openmp libgloo-dev
  libcli11-dev nlohmann-json3-dev libstb-dev zlib1g-dev libcpp-httplib-dev dataset-fashion-mnist chromium fonts-dejavu-core
  libgtest-dev libgmock-dev googletest libbenchmark-dev python3 python3-numpy python3-torch python3-torchvision
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
