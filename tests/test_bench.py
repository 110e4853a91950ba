"""The benchmark runs end to end on tiny shapes (it prints; nothing here checks speed)."""

import numpy as np
import jax

from bitmaps_jax import BinarizeConfig
from bitmaps_jax.model import bert as models
from bitmaps_jax.tools import bench


def test_quick_benchmark_runs(capsys, tmp_path):
  train = tmp_path / 'train.tsv'
  train.write_text('sentence\tlabel\n' + ''.join(
      f'{"a fine film " * (i % 7 + 1)}\t{i % 2}\n' for i in range(40)))
  bench.main(['--quick', f'--sst2_train={train}', '--sst2_examples=20'])
  out = capsys.readouterr().out
  for heading in ('train step', 'by phase', 'XLA cost estimate', 'inference', 'bucketing'):
    assert heading in out
  for row in ('optimizer   ours', 'ours packed binary layers', 'ours packed layers+emb', 'pytorch float32',
              'SST-2 train (WordPiece tokens): 20 examples',
              'projected to the whole epoch of 40 examples'):
    assert row in out, row


def test_benchmark_times_the_products_packed_model():
  cfg = models.model_config('tiny', architecture='BertForMaskedLM',
                            binarize=BinarizeConfig(layers=True, center=True))
  params = models.init_params(cfg, jax.random.PRNGKey(0))
  model = bench.packed_model(cfg, params, float_dtype='float32')
  ids = jax.numpy.ones((2, 8), jax.numpy.int32)
  ours = models.build_model(cfg).apply({'params': params}, ids)
  np.testing.assert_allclose(model(ids), ours, atol=1e-6)  # jit fuses differently: rounding
