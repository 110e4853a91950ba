#!/usr/bin/env bash
# Binary word embeddings in two stages on top of a binary-layer student:
#   a. from STUDENT_RUN with the table binarized: hidden-state MSE + attention KL only;
#   b. from a's weights: gold-label CE + logits KL only, once per seed.
#   scripts/staged_embeddings.sh TASK TEACHER_RUN STUDENT_RUN OUT DATA_DIR [--config.x=y ...]
# SCHEMES (default: scalar per_dim per_token rank1), SEEDS of stage b (default: 0 1 2),
# LR (default 2e-4), EPOCHS per stage (default 1), AUGMENT copies (default 2). Prints each
# scheme's final dev metric per seed, their mean and standard deviation, and the packed size.
set -euo pipefail
source "$(dirname "$0")/distill_stages.sh"
if (( $# < 5 )); then
  echo "usage: scripts/staged_embeddings.sh TASK TEACHER_RUN STUDENT_RUN OUT DATA_DIR [flags]" >&2
  exit 2
fi
task=$1 teacher=$2 student=$3 out=$4 data=$5
shift 5
schemes=${SCHEMES:-scalar per_dim per_token rank1}
seeds=${SEEDS:-0 1 2}
common=(--config "configs/glue.py:$task" --config.data_dir="$data"
        --config.teacher_checkpoint="$teacher" --config.augment.copies="${AUGMENT:-2}"
        --config.learning_rate="${LR:-2e-4}" --config.num_epochs="${EPOCHS:-1}")
mkdir -p "$out"
for emb in $schemes; do
  start=$SECONDS
  python train.py "${common[@]}" --config.binarize.embeddings="$emb" \
    --workdir "$out/${emb}_a" --config.init_checkpoint="$student" "${STAGE1_LOSSES[@]}" "$@"
  echo "${emb}_a $((SECONDS - start))" >> "$out/wall_seconds.txt"
  for seed in $seeds; do
    start=$SECONDS
    run="$out/${emb}_b_seed$seed"
    python train.py "${common[@]}" --config.binarize.embeddings="$emb" \
      --workdir "$run" --config.init_checkpoint="$out/${emb}_a" --config.seed="$seed" \
      "${STAGE2_LOSSES[@]}" "$@"
    echo "${emb}_b_seed$seed $((SECONDS - start))" >> "$out/wall_seconds.txt"
    python eval.py --workdir "$run" > "$run/eval.txt"
  done
  python -m bitmaps_jax export "$out/${emb}_b_seed${seeds%% *}" "$out/$emb.bitmaps"
done
python - "$out" "$seeds" $schemes <<'PY'
import json, os, statistics, sys
out, seeds, schemes = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
print(f'{"embeddings":<10} {"per seed":>24} {"mean":>6} {"std":>6} {"MiB":>6}')
for emb in schemes:
  scores = []
  for seed in seeds:
    e = json.load(open(os.path.join(out, f'{emb}_b_seed{seed}', 'eval_validation.json')))
    scores.append(e.get('mcc', e['accuracy']))
  std = statistics.stdev(scores) if len(scores) > 1 else 0.0
  mib = os.path.getsize(os.path.join(out, f'{emb}.bitmaps')) / 2**20
  per_seed = ' '.join(f'{s:.3f}' for s in scores)
  print(f'{emb:<10} {per_seed:>24} {statistics.mean(scores):6.3f} {std:6.3f} {mib:6.2f}')
PY
