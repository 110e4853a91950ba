"""The benchmark runs end to end on tiny shapes (it prints; nothing here checks speed)."""

import re

import jax
import numpy as np
import pytest

from bitmaps_jax import BinarizeConfig
from bitmaps_jax.model import bert
from bitmaps_jax.tools import bench


def test_quick_benchmark_runs(capsys, tmp_path):
  train = tmp_path / 'train.tsv'
  train.write_text('sentence\tlabel\n' + ''.join(
      f'{"a fine film " * (i % 7 + 1)}\t{i % 2}\n' for i in range(40)))
  bench.main(['--quick', f'--sst2_train={train}', '--sst2_examples=20'])
  out = capsys.readouterr().out
  for heading in ('train step', 'by phase', 'XLA cost estimate', 'XLA memory analysis',
                  'inference', 'bucketing', 'packed inference (MLM forward)'):
    assert heading in out
  # The packed section: every shape has float32, the kernel and XLA rows for both
  # binarizations, and PyTorch; the speed-up is float32's time over the row's.
  packed = re.findall(r'tiny\s+(\d+x\d+)\s+(ours float32|packed [\w+]+, \w+|pytorch float32)\s+'
                      r'([\d.]+) ms \(\s*([\d.]+)x faster\)', out)
  for shape in ('1x4', '2x8'):
    names = [r[1] for r in packed if r[0] == shape]
    assert names[0] == 'ours float32' and names[-1] == 'pytorch float32', names
    assert {'packed layers, xla', 'packed layers+emb, xla'} <= set(names), names
  for row in ('optimizer   ours', 'ours packed binary layers', 'ours packed layers+emb', 'pytorch float32',
              'SST-2 train (WordPiece tokens): 20 examples',
              'projected to the whole epoch of 40 examples'):
    assert row in out, row
  # The printed ratios are the printed measurements divided, side by side.
  rows = re.findall(r'tiny\s+(ours float32|ours packed [\w+ ]+?|pytorch float32)\s+([\d.]+) ms '
                    r'\(\s*([\d.]+)x\)\s+weights\s+([\d.]+) MiB \(\s*([\d.]+)x less\)', out)
  assert [r[0] for r in rows][:3] == ['ours float32', 'ours packed binary layers',
                                      'ours packed layers+emb'], rows
  fp_ms = float(rows[0][1])
  for name, ms, ratio, mib, less in rows:
    if fp_ms >= 1.0 and float(ms) >= 1.0:  # printed to 0.1 ms: compare where that is precise
      # each time is rounded to +-0.05 ms, the ratio to +-0.005
      rel = 0.05 / float(ms) + 0.05 / fp_ms
      assert float(ratio) == pytest.approx(float(ms) / fp_ms, rel=rel, abs=0.006), name
  # Weight memory: the packed rows hold 1 bit per binary weight (tiny shapes print as 0.0 MiB,
  # so the byte counts behind the table are checked).
  table = bench.inference_rows('tiny', 2, 16, 1)
  fp_bytes, layers_bytes, emb_bytes = (table[i][2] for i in range(3))
  assert emb_bytes < layers_bytes < fp_bytes


def test_benchmark_times_the_products_packed_model():
  cfg = bert.sized_config('tiny', architecture='BertForMaskedLM',
                            binarize=BinarizeConfig(layers=True, center=True))
  params = bert.init_params(cfg, jax.random.PRNGKey(0))
  model = bench.packed_model(cfg, params, float_dtype='float32')
  ids = jax.numpy.ones((2, 8), jax.numpy.int32)
  ours = bert.build_model(cfg).apply({'params': params}, ids)
  np.testing.assert_allclose(model(ids), ours, atol=1e-6)  # jit fuses differently: rounding


def test_product_train_step_writes_the_new_state_over_the_old():
  cfg = bert.sized_config('tiny', architecture='BertForMaskedLM')
  mem = bench.step_memory(cfg, 2, 16)
  _, _, args = bench.product_train_step(cfg, 2, 16)
  state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(args[0]))
  assert mem['aliased'] >= state_bytes > 0  # donated: no second copy of params and moments
  assert mem['peak'] == mem['arguments'] + mem['outputs'] - mem['aliased'] + mem['temporaries']
