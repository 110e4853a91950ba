"""The benchmark runs end to end on tiny shapes (it prints; nothing here checks speed)."""

import numpy as np
import jax

from bitmaps_jax import bench, models
from bitmaps_jax.binarize import BinarizeConfig


def test_quick_benchmark_runs(capsys):
  bench.main(['--quick'])
  out = capsys.readouterr().out
  for heading in ('train step', 'inference', 'bucketing'):
    assert heading in out
  assert 'ours packed binary layers' in out and 'pytorch float32' in out


def test_packed_forward_equals_binarized_model():
  cfg = models.model_config('tiny', architecture='BertForMaskedLM',
                            binarize=BinarizeConfig(layers=True, center=True))
  params = models.init_params(cfg, jax.random.PRNGKey(0))
  packed, shapes = bench.pack_for_inference(cfg, params, float_dtype=np.float32)
  ids = jax.numpy.ones((2, 8), jax.numpy.int32)
  ours = models.build_model(cfg).apply({'params': params}, ids)
  out = bench.packed_forward_fn(cfg, packed, shapes)(packed, ids)
  np.testing.assert_allclose(out, ours, atol=1e-6)  # jit fuses differently: float rounding
