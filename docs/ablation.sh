#!/usr/bin/env bash
# Follow-up of the synthetic study (docs/RESULTS.md): univ_paper (then called univ_full) at N = 10,
# seed 0, with one entropy-module setting changed at a time. Each run uses the
# study's settings (pipelines/study_synthetic.yaml) and is evaluated on the
# full validation split. Usage: bash docs/ablation.sh [variant ...]
set -euo pipefail
cd "$(dirname "$0")/.."
USSS=${USSS:-.venv/bin/usss-tf}
STUDY=(--set method=univ_paper --set seed=0 --set domains.0.labeled=10 --set domains.1.labeled=10
       --set domains.0.scale=0.25 --set domains.1.scale=0.25 --set "data.crop=[32, 64]"
       --set data.eval_batch_size=20 --set train.pretrain_steps=150 --set train.steps=150
       --set train.checkpoint_every=150 --set train.log_every=50 --set train.verbose=0)
declare -A VARIANTS=(
  [entropy_x10]="--set loss.within_entropy=1.0 --set loss.cross_entropy=1.0"
  [temperature_0.5]="--set model.temperature=0.5"
  [one_centroid]="--set model.centroids_per_class=1"
  [no_embedding_supervision]="--set loss.embedding_supervision=0.0"
)
for name in "${@:-${!VARIANTS[@]}}"; do
  run_dir=runs/ablation/$name
  # shellcheck disable=SC2086
  $USSS train pipelines/quickstart.yaml "${STUDY[@]}" ${VARIANTS[$name]} --set name=ablation-$name \
      --run-dir "$run_dir" > "runs/ablation-$name.log" 2>&1
  $USSS evaluate "$run_dir" --json "$run_dir/evaluation.json" | grep "mIoU" | sed "s/^/$name: /"
done
