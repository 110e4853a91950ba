"""Learning-rate schedule values and which parameters get weight decay."""

import jax
import ml_collections
import numpy as np
import pytest

from bitmaps_jax.model import bert, binary_params
from bitmaps_jax.train import optim
from bitmaps_jax.errors import UserError


def test_linear_schedule_values():
  s = optim.learning_rate_schedule(1e-3, total_steps=110, warmup_steps=10, decay='linear')
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(5e-4)
  assert float(s(10)) == pytest.approx(1e-3)
  assert float(s(60)) == pytest.approx(5e-4)
  assert float(s(110)) == pytest.approx(0.0, abs=1e-12)


def test_cosine_schedule_values():
  s = optim.learning_rate_schedule(2e-3, total_steps=110, warmup_steps=10, decay='cosine',
                                   end_factor=0.1)
  assert float(s(10)) == pytest.approx(2e-3)
  assert float(s(60)) == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5), rel=1e-5)
  assert float(s(110)) == pytest.approx(2e-4, rel=1e-5)


def test_schedule_rejects_bad_values():
  with pytest.raises(UserError, match='learning_rate must be positive'):
    optim.learning_rate_schedule(-1e-3, 100, 10)
  with pytest.raises(UserError, match='warmup_steps'):
    optim.learning_rate_schedule(1e-3, 100, 200)
  with pytest.raises(UserError, match='lr_decay'):
    optim.learning_rate_schedule(1e-3, 100, 10, decay='step')


def _config(**changes):
  cfg = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, scale_learning_rate=1e-1, warmup_steps=0, lr_decay='linear',
      weight_decay=0.5, grad_clip_norm=0.0, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8))
  cfg.update(changes)
  return cfg


@pytest.mark.parametrize('granularity,embeddings', [('per_tensor', 'rank1'),
                                                    ('rank1', 'per_dim')])
def test_scheme_scales_get_no_decay_and_their_own_learning_rate(granularity, embeddings):
  model_cfg = bert.sized_config('tiny', architecture='BertForMaskedLM', binarize=dict(
      layers=True, granularity=granularity, embeddings=embeddings))
  params = bert.init_params(model_cfg, jax.random.PRNGKey(0))
  cfg = _config()
  schedules = optim.make_schedules(cfg, 100)
  assert set(schedules) == {'weights', 'scales'}
  tx = optim.make_optimizer(cfg, schedules, binary_params.scale_paths(model_cfg),
                            binary_params.no_decay_paths(model_cfg))
  grads = jax.tree_util.tree_map(np.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  dense = updates['bert']['encoder']['layer_0']['attention']['self']['query']
  emb = updates['bert']['embeddings']['word_embeddings']
  ln = updates['bert']['embeddings']['LayerNorm']
  # First Adam step moves each weight by ~lr (plus lr * decay * w for decayed weights).
  for tree in (dense, emb):
    for name, update in tree.items():
      if name == 'bias':
        continue
      u = np.abs(np.asarray(update)).ravel()
      if name in ('kernel', 'embedding'):
        p = np.asarray(params['bert']['encoder']['layer_0']['attention']['self']['query'][
            'kernel'] if name == 'kernel' else params['bert']['embeddings']['word_embeddings'][
                'embedding']).ravel()
        np.testing.assert_allclose(u, np.abs(1e-3 * (1 + 0.5 * p)), rtol=1e-3)
      else:  # a scheme's scale: the scale learning rate, no decay
        np.testing.assert_allclose(u, 0.1, rtol=1e-3)
  np.testing.assert_allclose(np.abs(np.asarray(ln['scale'])), 1e-3, rtol=1e-3)
  np.testing.assert_allclose(np.abs(np.asarray(dense['bias'])), 1e-3, rtol=1e-3)


def test_one_schedule_group_without_scale_learning_rate():
  schedules = optim.make_schedules(_config(scale_learning_rate=None), 100)
  assert set(schedules) == {'weights'}
