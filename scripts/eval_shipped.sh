#!/usr/bin/env bash
# Re-makes every figure and number docs/RESULTS.md reports for a Fashion-MNIST model (default: the shipped one):
# class grid, DDPM Fig. 6-8 figures, DDIM encode/decode round trip, FID and IS against the real-data floor, the
# steps-vs-FID sweep, bits/dim with its per-term plot, and the rate-distortion curve. Numbers go to OUT/*.json and
# OUT/*.csv, pictures to OUT/*.png. About 25 minutes on 2 CPU cores.
#
#   bash scripts/eval_shipped.sh [MODEL] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/fashion-mnist.safetensors}
out=${2:-runs/eval-shipped}
clf=models/fashion-mnist-classifier.safetensors
ddpm=./build/ddpm
mkdir -p "$out"
ref="--ref-cache $out/ref-train.safetensors"
log() { echo "eval_shipped: $*" >&2; }

log "figures"
# Stochastic sampling (DDIM with η = 1) and the deterministic kind (η = 0), same seed: see RESULTS.md on the difference.
$ddpm sample -q -m "$model" --sampler ddim --eta 1 --steps 100 --per-class -n 8 --seed 1 --plot "$out/classes.png" -o "$out/classes.npy"
$ddpm sample -q -m "$model" --sampler ddim --steps 50 --per-class -n 8 --seed 1 --plot "$out/classes_eta0.png" -o "$out/classes_eta0.npy"
$ddpm progressive -q -m "$model" -n 4 --sampler ddpm --seed 2 --out "$out/progressive.png" --chain "$out/progressive_chain.png"
$ddpm shared-latent -q --json -m "$model" --index 0,1 --sampler ddpm -k 6 --out "$out/shared_latent.png" > "$out/shared_latent.json"
$ddpm interpolate -q -m "$model" --index 0,1 --sampler ddim --steps 100 --t 250,500,750 --out "$out/interpolate.png"
$ddpm interpolate -q -m "$model" --index 2,3 --ddim-latent --out "$out/interpolate_ddim.png"

log "DDIM encode/decode round trip"
$ddpm encode -q --json -m "$model" -n 8 --sweep 10,20,50,100 -o "$out/latents.npy" > "$out/encode.json"

log "FID / IS: the real-data floor (test set against the training set), then the model"
$ddpm fid -q --json -c "$clf" --samples fashion-mnist:test --ref fashion-mnist -n 10000 $ref > "$out/fid_floor.json"
$ddpm fid -q --json -c "$clf" -m "$model" --sampler ddim --eta 1 --steps 50 -n 500 $ref > "$out/fid_model_ddim_eta1.json"
$ddpm fid -q --json -c "$clf" -m "$model" --sampler dpm++ --steps 20 -n 500 $ref > "$out/fid_model_dpmpp.json"

log "steps vs FID"
$ddpm sweep -q --json -c "$clf" -m "$model" --samplers ddpm,ddim,dpm++ --steps-list 10,20,50 -n 200 $ref \
  --csv "$out/sweep.csv" --plot "$out/sweep.png" > "$out/sweep.json"

log "bits/dim and rate-distortion"
$ddpm nll -q --json -m "$model" --data fashion-mnist:test -n 50 --batch 250 --csv "$out/nll_terms.csv" --plot "$out/nll_terms.png" > "$out/nll.json"
$ddpm rate-distortion -q --json -m "$model" --data fashion-mnist:test -n 20 --batch 200 --csv "$out/rate_distortion.csv" \
  --prefix "$out/rate_distortion" > "$out/rate_distortion.json"
log "done: $out"
