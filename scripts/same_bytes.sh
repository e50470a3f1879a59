#!/usr/bin/env bash
# Runs a fixed set of seeded ddpm commands (every sampler, guidance, NLL, the generation figures, training losses of
# an MLP and a tiny U-Net, a resume) and prints one SHA-256 per output. Run it before and after a refactor that must
# not change numbers, and diff the two listings:
#   bash scripts/same_bytes.sh build/ddpm /tmp/before > before.txt; ...; diff before.txt after.txt
set -euo pipefail
DDPM=$(realpath "${1:-build/ddpm}")
OUT=${2:-$(mktemp -d)}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
M=models/fashion-mnist.safetensors
run() { "$DDPM" --threads 2 --quiet "$@" >/dev/null; }
# Training: an MLP on points (losses in metrics.jsonl, weights in the checkpoint), its resume, and a tiny U-Net.
run train --data toy:8gaussians --steps 300 --batch 128 --log-every 10 --checkpoint-every 150 --seed 3 --conditional --out "$OUT/mlp"
cp "$OUT/mlp/metrics.jsonl" "$OUT/mlp_metrics_full.jsonl"
run train --data toy:moons --steps 200 --batch 64 --log-every 10 --var-type learned_range --loss hybrid \
  --timestep-sampler loss-second-moment --seed 1 --out "$OUT/hyb" --checkpoint-every 100
run train --preset fashion-mnist --channels 32 --channel-mult 1,2 --res-blocks 1 --steps 6 --batch 8 --log-every 1 \
  --seed 2 --out "$OUT/unet"
run train --preset fashion-mnist --channels 32 --channel-mult 1,2 --res-blocks 1 --steps 3 --batch 8 --log-every 1 \
  --seed 2 --out "$OUT/unet_resume"
run train --resume --steps 6 --out "$OUT/unet_resume"
C="$OUT/mlp/checkpoint.safetensors"
# Samplers on a trained checkpoint, an exact mixture and the shipped image model.
run sample -m "$C" --sampler ddpm --num 200 --seed 5 -o "$OUT/s_ddpm.npy"
run sample -m "$C" --sampler ddim --steps 20 --eta 0.5 --num 200 --seed 5 -o "$OUT/s_ddim.npy"
run sample -m "$C" --sampler dpm++ --num 200 --seed 5 -o "$OUT/s_dpm.npy"
run sample -m "$C" --sampler langevin --steps 20 --num 200 --seed 5 -o "$OUT/s_lang.npy"
run sample -m "$C" --sampler ddim --class 2 --guidance 1.5 --num 100 --seed 5 -o "$OUT/s_cfg.npy"
run sample -m "$OUT/hyb/checkpoint.safetensors" --sampler ddim --steps 25 --spacing trailing --num 100 -o "$OUT/s_hyb.npy"
run sample -m gmm:8gaussians --sampler dpm++ --steps 10 --num 100 --seed 7 -o "$OUT/s_gmm.npy"
run sample -m gaussian:mean=0.1,std=0.4,dim=3 --sampler ddim --steps 10 --num 50 --seed 7 -o "$OUT/s_gauss.npy"
run sample -m "$M" --sampler ddim --steps 8 --per-class -n 1 --seed 1 -o "$OUT/s_fm_ddim.npy"
run sample -m "$M" --sampler dpm++ --steps 6 --class 3 -n 2 --guidance 1 --seed 1 -o "$OUT/s_fm_dpm.npy"
# NLL (terms as CSV) and the generation figures.
run nll -m "$C" --data toy:8gaussians --num 200 --csv "$OUT/nll_mlp.csv"
run nll -m "$M" --data fashion-mnist:test --num 4 --csv "$OUT/nll_fm.csv"
run progressive -m "$M" --sampler ddim --steps 10 -n 2 --out "$OUT/prog.png"
run interpolate -m "$M" --sampler ddim --steps 10 --out "$OUT/interp.png"
run encode -m "$M" --steps 10 --index 0,1 --data fashion-mnist:test -o "$OUT/enc.npy"
for f in "$OUT"/mlp_metrics_full.jsonl "$OUT"/hyb/metrics.jsonl "$OUT"/unet/metrics.jsonl "$OUT"/unet_resume/metrics.jsonl \
         "$OUT"/*.npy "$OUT"/*.csv "$OUT"/*.png; do
  # Metrics lines carry a wall-clock rate: hash them without it.
  if [[ $f == *.jsonl ]]; then sed -E 's/"it_per_s":[^,}]*,?//' "$f" | sha256sum | sed "s|-|${f#$OUT/}|"
  else (cd "$OUT" && sha256sum "${f#$OUT/}"); fi
done
# Checkpoint weights (the metadata holds the command line, which names OUT): tensor bytes only.
for c in mlp hyb unet unet_resume; do
  /usr/bin/python3 - "$OUT/$c/checkpoint.safetensors" "$c" <<'PY'
import hashlib, json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
print(hashlib.sha256(b[8 + n:]).hexdigest(), sys.argv[2] + '/checkpoint tensors')
PY
done
