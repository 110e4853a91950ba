#!/usr/bin/env bash
# The embedding-variant comparison on a GLUE task: binary layers plus each word-embedding
# scheme, distilled from one teacher with the same budget, then evaluated on dev.
#   scripts/embedding_table.sh TASK TEACHER_RUN OUT DATA_DIR [extra --config.x=y flags]
# SCHEMES (environment) picks the schemes; default: none scalar per_dim per_token rank1.
set -euo pipefail
task=${1:?usage: scripts/embedding_table.sh TASK TEACHER_RUN OUT DATA_DIR [flags]}
teacher=${2:?usage: scripts/embedding_table.sh TASK TEACHER_RUN OUT DATA_DIR [flags]}
out=${3:?usage: scripts/embedding_table.sh TASK TEACHER_RUN OUT DATA_DIR [flags]}
data=${4:?usage: scripts/embedding_table.sh TASK TEACHER_RUN OUT DATA_DIR [flags]}
shift 4
schemes=${SCHEMES:-none scalar per_dim per_token rank1}
mkdir -p "$out"
for emb in $schemes; do
  start=$SECONDS
  python train.py --config "configs/glue.py:$task" --workdir "$out/emb_$emb" \
    --config.data_dir="$data" --config.teacher_checkpoint="$teacher" \
    --config.binarize.embeddings="$emb" "$@"
  echo "emb_$emb $((SECONDS - start))" >> "$out/wall_seconds.txt"
  python eval.py --workdir "$out/emb_$emb" > "$out/emb_$emb/eval.txt"
  python -m bitmaps_jax export "$out/emb_$emb" "$out/emb_$emb/model.bitmaps"
done
python - "$out" $schemes <<'PY'
import json, os, sys
out = sys.argv[1]
wall = dict(l.split() for l in open(os.path.join(out, 'wall_seconds.txt')))
print(f'{"embeddings":<10} {"metric":>7} {"acc":>6} {"labels":>12} {"MiB":>6} {"wall s":>7}')
for emb in sys.argv[2:]:
  run = os.path.join(out, f'emb_{emb}')
  e = json.load(open(os.path.join(run, 'eval_validation.json')))
  metric = e.get('mcc', e['accuracy'])
  mib = os.path.getsize(os.path.join(run, 'model.bitmaps')) / 2**20
  print(f'{emb:<10} {metric:7.3f} {e["accuracy"]:6.3f} {str(e["predicted_label_counts"]):>12} '
        f'{mib:6.2f} {wall[f"emb_{emb}"]:>7}')
PY
