"""Learning-rate schedule values and which parameters get weight decay."""

import ml_collections
import numpy as np
import pytest

from bitmaps_jax import optim
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


def test_decay_mask_and_separate_scale_lr():
  params = {'dense': {'kernel': np.ones((2, 2)), 'bias': np.ones(2), 'alpha': np.ones(()),
                      'gamma': np.ones(())},
            'LayerNorm': {'scale': np.ones(2), 'bias': np.ones(2)},
            'word_embeddings': {'embedding': np.ones((3, 2)), 'u': np.ones(3), 'v': np.ones(2)}}
  mask = optim.decay_mask(params)
  assert mask['dense'] == {'kernel': True, 'bias': False, 'alpha': False, 'gamma': False}
  assert mask['LayerNorm'] == {'scale': False, 'bias': False}
  assert mask['word_embeddings'] == {'embedding': True, 'u': False, 'v': False}
  cfg = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, scale_learning_rate=1e-1, warmup_steps=0, lr_decay='linear',
      weight_decay=0.5, grad_clip_norm=0.0, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8))
  tx = optim.make_optimizer(cfg, total_steps=100)
  grads = {k: {n: np.ones_like(v) for n, v in d.items()} for k, d in params.items()}
  updates, _ = tx.update(grads, tx.init(params), params)
  # First Adam step moves each weight by ~lr (plus decay): scales use the larger rate.
  assert abs(float(updates['dense']['alpha'])) == pytest.approx(0.1, rel=1e-3)
  assert abs(float(updates['dense']['bias'][0])) == pytest.approx(1e-3, rel=1e-3)
  assert abs(float(updates['dense']['kernel'][0, 0])) == pytest.approx(1e-3 * 1.5, rel=1e-3)
