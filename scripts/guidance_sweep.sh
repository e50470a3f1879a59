#!/usr/bin/env bash
# Issue 17: classifier guidance of the shipped model's unconditional mode (its null label) with the shipped
# noise-aware classifier, beside classifier-free guidance of the same model, on balanced classes: FID, IS and the
# class accuracy of the samples by the project's evaluation classifier, for each scale, the same seeds and counts.
# Appends JSON lines to docs/data/guidance.jsonl, draws docs/images/guidance_fid.png and guidance_accuracy.png from
# every line there, and one class grid per method (one row per class) at GRID_S / GRID_W.
#
#   bash scripts/guidance_sweep.sh [N]      N samples per point (default 250); DDIM η = 0, 50 steps, seed 0
#   SCALES="0 1 2 5 10" GRID_S=5 GRID_W=1 THREADS=2 REF_CACHE=ref.safetensors bash scripts/guidance_sweep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-250}
ddpm=${DDPM:-./build/ddpm}
model=models/fashion-mnist.safetensors
guide=models/fashion-mnist-noisy-classifier.safetensors
clf=models/fashion-mnist-classifier.safetensors
out=docs/data/guidance.jsonl
ref=${REF_CACHE:-/tmp/ref-train.safetensors}
threads=${THREADS:-2}
run=("$ddpm" --threads "$threads")
for s in ${SCALES:-0 1 2 5 10}; do
  for method in classifier classifier-free; do
    if [ "$method" = classifier ]; then flags=(--guide "$guide" --classifier-scale "$s"); else flags=(--guidance "$s"); fi
    echo "guidance_sweep: $method guidance, scale $s, $n samples" >&2
    j=$("${run[@]}" fid -q --json -c "$clf" -m "$model" --sampler ddim --steps 50 -n "$n" --seed 0 --ref-cache "$ref" \
      "${flags[@]}")
    echo "{\"method\":\"$method\",\"scale\":$s,\"sampler\":\"ddim-eta0-50\",\"result\":$j}" >> "$out"
  done
done
"$ddpm" plot -q "$out" -x scale -y result.fid --group method --xlabel "guidance scale (s for the classifier, w classifier-free)" \
  --ylabel "FID" --title "FID against guidance scale (DDIM 50 steps, balanced classes)" -o docs/images/guidance_fid.png
"$ddpm" plot -q "$out" -x scale -y result.accuracy --group method --xlabel "guidance scale (s for the classifier, w classifier-free)" \
  --ylabel "class accuracy" --title "Class accuracy of the samples against guidance scale" -o docs/images/guidance_accuracy.png
grid=("${run[@]}" sample -q -m "$model" --sampler ddim --steps 50 --per-class -n 8 --seed 1)
"${grid[@]}" --classifier "$guide" --classifier-scale "${GRID_S:-5}" --plot docs/images/guidance_classifier.png
"${grid[@]}" --guidance "${GRID_W:-1}" --plot docs/images/guidance_free.png
echo "guidance_sweep: appended to $out; figures docs/images/guidance_{fid,accuracy,classifier,free}.png" >&2
