#!/usr/bin/env bash
# Quickstart command 1: installs the dependencies, builds, samples one row per class from the shipped Fashion-MNIST
# model (deterministic DDIM, η = 0, 50 steps: about half a minute on 2 cores), draws the progressive-generation figure,
# and runs a short training demo.
# The toy demo (a 2-D ring, plots of samples and likelihood terms) is scripts/demo-toy.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
model=models/fashion-mnist.safetensors
out=runs/demo
mkdir -p "$out"
./build/ddpm info "$model"
# One row per class: T-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot.
./build/ddpm sample -m "$model" --sampler ddim --steps 50 --per-class -n 8 --seed 1 --plot "$out/classes.png"
# DDPM Fig. 6: x̂0 along one sampling run, one row per class 0..3.
./build/ddpm progressive -m "$model" --sampler ddim --steps 50 -n 4 --seed 2 --out "$out/progressive.png"
# A short training run of the same preset, from scratch (the shipped model is this run continued to step 32484).
./build/ddpm train --preset fashion-mnist --steps 60 --sample-every 60 --out "$out/train"
echo "demo: $out/classes.png (one row per class), $out/progressive.png, $out/train/ (a 60-step training run)"
