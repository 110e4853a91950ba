"""A non-finite step stops the run (or is skipped) and never reaches a checkpoint."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from bitmaps_jax.model import bert
from bitmaps_jax.train import checkpoints
from bitmaps_jax.train import loop as trainer
from configs import default


def _task(bad_steps):
  rng = np.random.default_rng(0)

  def batch(step):
    x = rng.normal(size=(8, 4)).astype(np.float32)
    if step in bad_steps:
      x[0, 0] = np.nan
    return {'x': x}

  def batch_metrics(params, batch, rng, train, teacher=None):
    err = jnp.square(batch['x'] @ params['w'] - 1.0)
    return {'loss': jnp.sum(err), 'count': jnp.float32(err.shape[0])}

  return trainer.Task(model_config=bert.model_config('tiny'), params={'w': jnp.zeros((4,))},
                      batch_metrics=batch_metrics, train_batch=batch,
                      eval_batches=lambda: [{'x': np.ones((8, 4), np.float32)}],
                      items_per_step=8, unit='ex')


def _config(**changes):
  config = default.get_config()
  config.update(num_train_steps=6, warmup_steps=0, log_every_steps=1, eval_every_steps=2,
                checkpoint_every_steps=2, **changes)
  return config


def test_nonfinite_step_stops_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(trainer.NonFiniteError, match=r'step 4: non-finite loss.*checkpoints/2'):
    trainer.train_and_evaluate(_config(), str(tmp_path), _task(bad_steps={3}))
  store = checkpoints.CheckpointStore(str(tmp_path / 'checkpoints'))
  assert store.latest_step() == 2
  assert np.isfinite(np.asarray(store.restore_params(2)['w'])).all()


def test_nonfinite_steps_can_be_skipped(tmp_path):
  result = trainer.train_and_evaluate(_config(skip_nonfinite_steps=True), str(tmp_path),
                                      _task(bad_steps={1, 3}))
  assert np.isfinite(result['loss'])
  points = [json.loads(l) for l in open(os.path.join(tmp_path, 'metrics.jsonl'))]
  assert [p['step'] for p in points if p['split'] == 'train'] == [1, 3, 5, 6]
  assert points[-2]['skipped_steps'] == 2
