#!/usr/bin/env bash
# Two-stage distillation of a binary student (TinyBERT-style):
#   1. intermediate layers only: hidden-state MSE + attention KL, no logits loss, higher lr;
#   2. from stage 1's weights: gold-label CE + logits KL only.
#   scripts/staged_distill.sh TASK TEACHER_RUN OUT DATA_DIR [extra --config.x=y flags for both]
# STAGE1_LR / STAGE2_LR (default 5e-4 / 2e-4) and STAGE1_EPOCHS / STAGE2_EPOCHS (default 2 / 2)
# set the schedules; AUGMENT=N perturbed copies of every sentence in both stages (default 2).
set -euo pipefail
source "$(dirname "$0")/distill_stages.sh"
if (( $# < 4 )); then
  echo "usage: scripts/staged_distill.sh TASK TEACHER_RUN OUT DATA_DIR [flags]" >&2
  exit 2
fi
task=$1 teacher=$2 out=$3 data=$4
shift 4
common=(--config "configs/glue.py:$task" --config.data_dir="$data"
        --config.teacher_checkpoint="$teacher" --config.augment.copies="${AUGMENT:-2}")
mkdir -p "$out"
start=$SECONDS
python train.py "${common[@]}" --workdir "$out/stage1" \
  --config.learning_rate="${STAGE1_LR:-5e-4}" --config.num_epochs="${STAGE1_EPOCHS:-2}" \
  "${STAGE1_LOSSES[@]}" "$@"
echo "stage1 $((SECONDS - start))" >> "$out/wall_seconds.txt"
start=$SECONDS
python train.py "${common[@]}" --workdir "$out/stage2" --config.init_checkpoint="$out/stage1" \
  --config.learning_rate="${STAGE2_LR:-2e-4}" --config.num_epochs="${STAGE2_EPOCHS:-2}" \
  "${STAGE2_LOSSES[@]}" "$@"
echo "stage2 $((SECONDS - start))" >> "$out/wall_seconds.txt"
for stage in stage1 stage2; do
  python eval.py --workdir "$out/$stage" > "$out/$stage/eval.txt"
done
cat "$out/stage2/eval.txt"
