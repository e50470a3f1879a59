#!/usr/bin/env bash
# The toy demo: installs the dependencies, builds, trains the MLP denoiser on the 8-Gaussian ring (about a minute),
# samples from it with DDPM and DDIM, and writes the plots to runs/8gaussians/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
out=runs/8gaussians
./build/ddpm train --data toy:8gaussians --steps 4000 --seed 0 --out "$out"
./build/ddpm sample --model "$out/checkpoint.safetensors" --sampler ddpm --num 2000 --seed 1 \
  --out-npy "$out/samples_ddpm.npy" --plot "$out/samples.png"
./build/ddpm sample --model "$out/checkpoint.safetensors" --sampler ddim --steps 50 --num 2000 --seed 1 \
  --plot "$out/samples_ddim50.png"
./build/ddpm nll --model "$out/checkpoint.safetensors" --data toy:8gaussians --num 1000 --plot "$out/nll_terms.png"
./build/ddpm schedule --schedule linear,cosine --csv "$out/schedules.csv" --plot "$out/alpha_bar.png" \
  --plot-snr "$out/snr.png"
echo "demo: plots in $out/ (samples.png: DDPM samples over the data)"
