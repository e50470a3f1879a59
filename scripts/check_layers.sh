#!/usr/bin/env bash
# The library's layering, checked: each folder of include/ddpm and src may include only the folders below it.
#   core (the top-level headers: schedule, diffusion, samplers, errors, ...)
#   io -> core                      data -> core, io                models -> core, io
#   eval -> core, io, data, models  store -> core, io, data, models (checkpoints, open_model)
#   train -> every folder above (core, io, data, models, eval, store)
#   serve -> core, io, data, models, store (generations, jobs, the HTTP API without its transport)
# Prints each include that breaks the rule and exits 1 if there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A allowed=(
  [core]="core" [io]="core io" [data]="core io data" [models]="core io models"
  [eval]="core io data models eval" [store]="core io data models store"
  [train]="core io data models eval store train"
  [serve]="core io data models store serve"
)
bad=0
layer_of() {  # ddpm/x/y.h -> x ; ddpm/y.h -> core
  local p=${1#ddpm/}
  [[ $p == */* ]] && echo "${p%%/*}" || echo core
}
for layer in "${!allowed[@]}"; do
  if [ "$layer" = core ]; then
    files=$(find include/ddpm -maxdepth 1 -type f -name '*.h'; find src -maxdepth 1 -type f -name '*.cpp')
  else
    files=$(find "include/ddpm/$layer" "src/$layer" -type f \( -name '*.h' -o -name '*.cpp' \) 2>/dev/null || true)
  fi
  for f in $files; do
    while IFS= read -r inc; do
      to=$(layer_of "$inc")
      if [[ " ${allowed[$layer]} " != *" $to "* ]]; then
        echo "layering: $f ($layer) includes $inc ($to)"
        bad=1
      fi
    done < <(sed -n 's|^#include "\(ddpm/[^"]*\)".*|\1|p' "$f")
  done
done
for d in include/ddpm/*/ src/*/; do
  name=$(basename "$d")
  [[ -v allowed[$name] ]] || { echo "layering: folder $d has no layer (add it to scripts/check_layers.sh)"; bad=1; }
done
[ $bad -eq 0 ] && echo "layering: every include goes downwards"
exit $bad
