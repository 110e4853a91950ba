"""Averaging runs' weights: the mean is exact, the result is a run eval and init read, and
mistakes are one line."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitmaps_jax import cli
from bitmaps_jax.tasks.glue import evaluate
from bitmaps_jax.tools import average
from bitmaps_jax.train.rundir import PARAMS_ONLY, RunDir


def test_average_params_is_the_elementwise_mean_in_each_leafs_dtype():
  a = {'w': jnp.array([1.0, -3.0]), 'h': {'b': jnp.array([2.0], jnp.bfloat16)}}
  b = {'w': jnp.array([2.0, 1.0]), 'h': {'b': jnp.array([3.0], jnp.bfloat16)}}
  c = {'w': jnp.array([0.0, 5.0]), 'h': {'b': jnp.array([4.0], jnp.bfloat16)}}
  out = average.average_params([a, b, c])
  np.testing.assert_allclose(out['w'], [1.0, 1.0])
  assert out['h']['b'].dtype == jnp.bfloat16 and float(out['h']['b'][0]) == 3.0


def test_average_of_two_seeds_is_a_run_that_eval_and_init_read(tmp_path, glue_config, capsys):
  runs = []
  for seed in (0, 1):
    runs.append(str(tmp_path / f'seed{seed}'))
    cli.train(glue_config(seed=seed, num_epochs=1.0), runs[-1])
  soup = str(tmp_path / 'soup')
  average.main([*runs, soup])
  assert 'the mean of 2 checkpoints' in capsys.readouterr().out

  members = [RunDir(r).restore_params()[0] for r in runs]
  params, _ = RunDir(soup).restore_params()
  flat = jax.tree_util.tree_leaves_with_path(params)
  assert flat
  for (path, leaf), m0, m1 in zip(flat, *(jax.tree_util.tree_leaves(m) for m in members)):
    np.testing.assert_allclose(leaf, (np.asarray(m0) + np.asarray(m1)) / 2, rtol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  # The binary latent weights of the two seeds differ, so the mean is not either member.
  assert any(not np.array_equal(a, b) for a, b in zip(*(jax.tree_util.tree_leaves(m)
                                                         for m in members)))
  origin = json.load(open(os.path.join(soup, PARAMS_ONLY)))
  assert origin['averaged_runs'] == [os.path.abspath(r) for r in runs]

  out = evaluate.evaluate_run(soup, RunDir(soup).train_config(), 'validation')
  assert sum(out['predicted_label_counts']) == 48
  # A new run starts from it; resuming training in it is refused in one line.
  cli.train(glue_config(num_epochs=1.0, init_checkpoint=soup, tokenizer=''),
            str(tmp_path / 'from_soup'))
  capsys.readouterr()
  with pytest.raises(SystemExit):
    cli.train(glue_config(num_epochs=1.0), soup)
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f'error: {soup}: holds params only (see {PARAMS_ONLY}), no training state to '
                 f'resume; start a new workdir with --config.init_checkpoint={soup}'], err


def one_line_error(capsys, args):
  """The single stderr line of an `average` call that exits with status 2."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    average.main(args)
  assert e.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  return lines[0]


def test_average_mistakes_are_one_line(tmp_path, glue_config, capsys):
  binary, floating = str(tmp_path / 'binary'), str(tmp_path / 'float')
  cli.train(glue_config(num_epochs=1.0), binary)
  cli.train(glue_config(num_epochs=1.0, binarize={'layers': False}), floating)

  assert 'usage' in one_line_error(capsys, [binary, str(tmp_path / 'out')])
  err = one_line_error(capsys, [binary, floating, str(tmp_path / 'out')])
  assert floating in err and 'another model' in err and 'binarize' in err, err
  err = one_line_error(capsys, [binary, str(tmp_path / 'nothing'), str(tmp_path / 'out')])
  assert 'nothing' in err and 'not a run directory' in err, err
  err = one_line_error(capsys, [binary, binary, floating])
  assert 'already a run' in err, err
  assert not os.path.exists(tmp_path / 'out')


def test_tail_average_of_one_runs_last_checkpoints(tmp_path, glue_config, capsys):
  run = str(tmp_path / 'run')
  cli.train(glue_config(num_epochs=2.0, checkpoint_every_steps=1, keep_checkpoints=3), run)
  steps = sorted(int(n) for n in os.listdir(RunDir(run).checkpoint_dir) if n.isdigit())
  assert len(steps) == 3, steps
  tail = str(tmp_path / 'tail')
  average.main([f'{run}@{steps[0]}', f'{run}@{steps[1]}', run, tail])
  members = [RunDir(run).restore_params(s)[0] for s in steps]
  params, step = RunDir(tail).restore_params()
  assert step == steps[-1]
  for leaf, *ms in zip(*(jax.tree_util.tree_leaves(t) for t in [params, *members])):
    np.testing.assert_allclose(leaf, sum(np.asarray(m, np.float32) for m in ms) / 3, rtol=1e-5)
  origin = json.load(open(os.path.join(tail, PARAMS_ONLY)))
  assert origin['averaged_runs'] == [os.path.abspath(run)] * 3 and origin['steps'] == steps

  out = str(tmp_path / 'out')
  err = one_line_error(capsys, [f'{run}@999', run, out])
  assert 'no checkpoint of step 999' in err and str(steps[-1]) in err, err
  assert 'whole number' in one_line_error(capsys, [f'{run}@last', run, out])
  assert 'named twice' in one_line_error(capsys, [run, f'{run}@{steps[-1]}', run, out])
