#!/usr/bin/env bash
# One point of the sample-quality curve (issue 13): FID and IS of a training state's EMA and raw weights under the
# deterministic and stochastic samplers, 500 samples each with the project's classifier, appended as JSON lines to
# docs/data/fid_curve.jsonl, and redraws docs/images/fid_curve.png from every point there. With --nll also the
# bits/dim of the first 50 test images (EMA weights); with --ddpm also DDPM's 1000 ancestral steps (EMA; ~40 min on
# 2 cores). About 12 minutes on 2 free cores without either. --skip-fid leaves out the five 50/20-step points (to add
# bits/dim or DDPM to a step measured before).
#
#   bash scripts/fid_curve.sh TRAINING_STATE.safetensors [--nll] [--ddpm] [--skip-fid]
set -euo pipefail
cd "$(dirname "$0")/.."
state=${1:?usage: fid_curve.sh TRAINING_STATE.safetensors [--nll] [--ddpm] [--skip-fid]}
shift
nll=0 ddpm_run=0 fid_run=1
for a in "$@"; do case $a in --nll) nll=1 ;; --ddpm) ddpm_run=1 ;; --skip-fid) fid_run=0 ;; *) echo "fid_curve: unknown option $a" >&2; exit 2 ;; esac; done
ddpm=${DDPM:-./build/ddpm}
clf=models/fashion-mnist-classifier.safetensors
out=docs/data/fid_curve.jsonl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step=$($ddpm info "$state" | awk '$1 == "step" {print $2}')
$ddpm info "$state" --strip "$tmp/ema.safetensors" > /dev/null
$ddpm info "$state" --strip "$tmp/raw.safetensors" --raw > /dev/null
ref="--ref-cache ${REF_CACHE:-$tmp/ref-train.safetensors}"
point() {  # weights sampler-label fid-flags…
  local w=$1 label=$2; shift 2
  echo "fid_curve: step $step, $w, $label" >&2
  local j
  j=$($ddpm --threads "${THREADS:-2}" fid -q --json -c "$clf" -m "$tmp/$w.safetensors" -n 500 --seed 0 $ref "$@")
  echo "{\"step\":$step,\"weights\":\"$w\",\"sampler\":\"$label\",\"result\":$j}" >> "$out"
}
if [ $fid_run = 1 ]; then
  point ema "ddim-eta0-50" --sampler ddim --steps 50
  point ema "ddim-eta1-50" --sampler ddim --eta 1 --steps 50
  point ema "dpm++-20" --sampler dpm++ --steps 20
  point raw "ddim-eta0-50" --sampler ddim --steps 50
  point raw "ddim-eta1-50" --sampler ddim --eta 1 --steps 50
fi
if [ $ddpm_run = 1 ]; then point ema "ddpm-1000" --sampler ddpm; fi
if [ $nll = 1 ]; then
  echo "fid_curve: step $step, bits/dim" >&2
  j=$($ddpm --threads "${THREADS:-2}" nll -q --json -m "$tmp/ema.safetensors" --data fashion-mnist:test -n 50 --batch 250)
  echo "{\"step\":$step,\"weights\":\"ema\",\"bits_per_dim\":$j}" >> "$out"
fi
$ddpm plot -q "$out" -y result.fid --group weights,sampler --log-y --xlabel "training step (batch 64)" \
  --ylabel "FID (log scale)" --title "FID against training step (500 samples, project classifier)" \
  -o docs/images/fid_curve.png
echo "fid_curve: appended step $step to $out; figure docs/images/fid_curve.png" >&2
