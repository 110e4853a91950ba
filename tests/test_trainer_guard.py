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


EVAL_BATCHES = [{'x': np.ones((8, 4), np.float32)}]


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

  return trainer.Task(model_config=bert.sized_config('tiny'), params={'w': jnp.zeros((4,))},
                      batch_metrics=batch_metrics, train_batch=batch,
                      evaluate=trainer.summed_evaluation(batch_metrics, lambda: EVAL_BATCHES),
                      items_per_step=8, unit='ex')


def _config(**changes):
  config = default.get_config()
  config.update(dict(dict(num_train_steps=6, warmup_steps=0, log_every_steps=1,
                          eval_every_steps=2, checkpoint_every_steps=2), **changes))
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


def test_ordinary_steps_make_no_host_transfer_and_batches_are_built_ahead(tmp_path,
                                                                          monkeypatch):
  made, used = [], []
  task = _task(bad_steps=set())
  real_batch = task.train_batch

  def batch(step):
    made.append(step)
    return real_batch(step)

  task.train_batch = batch
  gets = []
  real_get = trainer.jax.device_get
  monkeypatch.setattr(trainer.jax, 'device_get', lambda x: gets.append(1) or real_get(x))
  real_next = trainer.Prefetcher.next

  def next_batch(self):
    import time
    time.sleep(0.05)  # the device is busy: the producer thread gets ahead
    step, b = real_next(self)
    used.append((step, len(made)))
    return step, b

  monkeypatch.setattr(trainer.Prefetcher, 'next', next_batch)
  config = _config(num_train_steps=12, log_every_steps=6, eval_every_steps=12,
                   checkpoint_every_steps=12)
  trainer.train_and_evaluate(config, str(tmp_path), task)
  # Reads of the on-device log: one per log / evaluation / checkpoint step (6 and 12), plus
  # the evaluation's own metric sums; none on the other ten steps.
  assert len(gets) == 2 + len(EVAL_BATCHES), len(gets)
  # When step k is taken, the producer has already built at least k + 2 batches (2 ahead).
  assert all(n >= min(step + 3, 12) for step, n in used), used


def test_an_update_that_overflows_is_skipped_and_a_run_that_trained_nothing_is_refused(
    tmp_path):
  # Finite loss and gradient, but a learning rate that overflows float32 makes the update
  # infinite: the step must keep the old params, and with every step skipped nothing is saved.
  config = _config(skip_nonfinite_steps=True, learning_rate=1e39)
  with pytest.raises(trainer.NonFiniteError,
                     match=r'steps 1-2: every step was skipped as non-finite \(first: step 1, '
                           r'loss 8\.0.*nothing saved'):
    trainer.train_and_evaluate(config, str(tmp_path), _task(bad_steps=set()))
  assert not os.listdir(tmp_path / 'checkpoints')
  metrics = tmp_path / 'metrics.jsonl'
  assert not metrics.exists() or 'valid' not in metrics.read_text()


def test_the_guard_keeps_the_last_finite_params_and_optimizer_state(tmp_path):
  import jax
  from bitmaps_jax.train import parallel
  task, mesh = _task(bad_steps=set()), parallel.data_mesh()
  state, _ = trainer.make_state(_config(learning_rate=1e39), task, mesh)
  before = jax.device_get(state)
  step = trainer.make_train_step_fn(task, mesh).raw
  batch = parallel.global_batch(mesh, task.train_batch(0))
  after, sums, grad_norm, applied = step(state, batch, jax.random.PRNGKey(0), None)
  assert np.isfinite(float(sums['loss'])) and np.isfinite(float(grad_norm))
  assert not bool(applied)
  for old, new in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
    np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
