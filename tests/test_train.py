"""The training loop: data-parallel step on simulated devices, resume, outputs, bad configs."""

import json
import os

import jax
import numpy as np
import pytest
from flax.training import train_state

from bitmaps_jax import cli
from bitmaps_jax.tasks.mlm import task as pretraining
from bitmaps_jax.train import loop as trainer
from bitmaps_jax.train import optim, parallel


def _first_loss(task, config, mesh):
  state = train_state.TrainState.create(apply_fn=None, params=task.params,
                                        tx=optim.make_optimizer(config,
                                                                optim.make_schedules(config, 10)))
  step = parallel.make_train_step(task.batch_metrics, mesh, donate=False)
  batch = parallel.global_batch(mesh, task.train_batch(0))
  new_state, sums, grad_norm = step(parallel.replicate(mesh, state), batch,
                                    jax.random.PRNGKey(0), None)
  return float(sums['loss'] / sums['count']), float(grad_norm), new_state.params


def test_data_parallel_step_matches_single_device(tmp_path, mlm_config):
  assert jax.device_count() == 8, 'conftest sets 8 simulated CPU devices'
  config = mlm_config(dropout_rate=0.0, per_device_batch_size=2)
  task, _ = pretraining.build_task(config, str(tmp_path))
  loss8, norm8, params8 = _first_loss(task, config, parallel.data_mesh())
  loss1, norm1, params1 = _first_loss(task, config, parallel.data_mesh(jax.devices()[:1]))
  assert loss8 == pytest.approx(loss1, rel=1e-6)
  assert norm8 == pytest.approx(norm1, rel=1e-5)  # the global gradient, not a sum of 8
  diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), params8, params1))
  assert max(diffs) < 1e-6


def test_dropout_differs_per_device(tmp_path, mlm_config):
  config = mlm_config(dropout_rate=0.5)
  task, _ = pretraining.build_task(config, str(tmp_path))
  mesh = parallel.data_mesh()
  # Two devices given the same rows must still draw different dropout masks.
  batch = task.train_batch(0)
  same = {k: np.concatenate([v[:2]] * 8) for k, v in batch.items()}

  def per_device_loss(params, b, rng):
    rng = jax.random.fold_in(rng, jax.lax.axis_index('data'))  # as parallel.make_train_step
    return task.batch_metrics(params, b, rng, True)['loss'][None]

  step = jax.jit(jax.shard_map(per_device_loss, mesh=mesh,
                               in_specs=(parallel.P(), parallel.P('data'), parallel.P()),
                               out_specs=parallel.P('data')))
  losses = np.asarray(step(task.params, parallel.global_batch(mesh, same), jax.random.PRNGKey(0)))
  assert len(set(np.round(losses, 5))) > 1


def test_run_writes_outputs_and_resume_matches_uninterrupted(tmp_path, mlm_config):
  full_dir, cut_dir = str(tmp_path / 'full'), str(tmp_path / 'cut')
  full = cli.train(mlm_config(), full_dir)

  # Kill the second run after its step-3 checkpoint, while training step 5.
  task, _ = pretraining.build_task(mlm_config(), cut_dir)
  real_batch = task.train_batch

  def dying_batch(step):
    if step == 4:
      raise KeyboardInterrupt
    return real_batch(step)

  task.train_batch = dying_batch
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(mlm_config(), cut_dir, task)
  assert sorted(os.listdir(os.path.join(cut_dir, 'checkpoints'))) == ['3']
  resumed = cli.train(mlm_config(), cut_dir)
  assert resumed == full  # same final validation metrics, to the bit

  points = [json.loads(l) for l in open(os.path.join(cut_dir, 'metrics.jsonl'))]
  train_steps = [p['step'] for p in points if p['split'] == 'train']
  assert train_steps == [1, 2, 3, 4, 5, 6]  # step 4 logged by the killed run is not doubled
  assert {'loss', 'accuracy', 'mrr32'} <= set(points[-1])
  assert [p['step'] for p in points if p['split'] == 'valid'] == [3, 6]
  for name in ('train_val_loss.png', 'model_config.json', 'vocab.txt', 'train_config.json'):
    assert os.path.isfile(os.path.join(cut_dir, name)), name
  assert os.listdir(os.path.join(cut_dir, 'tensorboard'))

  # Asking for more steps continues from the last checkpoint instead of starting over.
  more = cli.train(mlm_config(num_train_steps=9), cut_dir)
  points = [json.loads(l) for l in open(os.path.join(cut_dir, 'metrics.jsonl'))]
  assert [p['step'] for p in points if p['split'] == 'train'][-4:] == [6, 7, 8, 9]
  assert set(more) == set(full)


def test_bad_config_values_are_one_line_errors(tmp_path, capsys, mlm_config):
  for changes, message in [
      (dict(learning_rate=-1.0), 'learning_rate must be positive'),
      (dict(num_train_steps=0), 'num_train_steps must be a positive integer'),
      (dict(dropout_rate=1.5), 'dropout_rate'),
      (dict(global_batch_size=12), 'global_batch_size 12 does not split over 8 devices'),
      (dict(binarize=dict(embeddings='per_word')), "unknown value 'per_word'"),
      (dict(binarize=dict(granularity='per_row')), "unknown value 'per_row'"),
      (dict(mask_prob=1.5), 'mask_prob must be in (0, 1)'),
      (dict(keep_checkpoints=0), 'keep_checkpoints must be a positive integer'),
      (dict(model='huge'), "unknown model size 'huge'"),
  ]:
    with pytest.raises(SystemExit) as e:
      cli.train(mlm_config(**changes), str(tmp_path / 'bad'))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_resuming_a_workdir_of_another_model_size_is_refused(tmp_path, capsys, mlm_config):
  workdir = str(tmp_path / 'run')
  cli.train(mlm_config(num_train_steps=3), workdir)
  saved_config = open(os.path.join(workdir, 'model_config.json')).read()
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.train(mlm_config(model='mini', num_train_steps=6), workdir)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'holds checkpoints of another model' in err[0], err
  assert 'hidden_size 32 (saved) vs 128' in err[0], err
  # Nothing already saved was touched.
  assert open(os.path.join(workdir, 'model_config.json')).read() == saved_config
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['3']
