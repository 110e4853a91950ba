"""Averages the weights of several runs of one model into a new run (a "model soup").

    python -m bitmaps_jax average RUN[@STEP] RUN[@STEP] [...] OUT_RUN

Runs fine-tuned from the same start with different seeds stay close in weight space, and the
mean of their weights often predicts better than a typical member. For a binary model the
mean is taken over the latent float weights and the scales, so each sign of the result is a
vote of the members weighted by their confidence |W| (a rank-1 scale's two factors are
averaged each on its own, which is not the mean of their products). RUN@STEP takes that step's
checkpoint instead of the latest, so the last checkpoints of one run can be averaged too (a
tail average, with `--config.keep_checkpoints` raised while training). Runs must share the
fields that decide the params' shapes (`rundir.SHAPE_FIELDS`). OUT_RUN gets the first run's
configs and vocabulary, one checkpoint holding the averaged params and params_only.json (the
runs and steps averaged): eval.py, export and --config.init_checkpoint read it like any run;
it holds no optimizer state to resume training from.
"""

import sys

import jax
import jax.numpy as jnp

from bitmaps_jax import cli
from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.train.rundir import RunDir, shape_differences


def average_params(trees):
  """The element-wise mean of params trees of one structure, in float32, cast back to each
  leaf's dtype."""
  def mean(*leaves):
    total = sum(jnp.asarray(l, jnp.float32) for l in leaves)
    return (total / len(leaves)).astype(leaves[0].dtype)
  return jax.tree_util.tree_map(mean, *trees)


def parse_member(spec: str):
  """'RUN' -> (RUN, None); 'RUN@STEP' -> (RUN, STEP)."""
  path, sep, step = spec.rpartition('@')
  if not sep or '/' in step:
    return spec, None
  if not step.isdigit():
    raise UserError(f'{spec}: the step after "@" must be a whole number, not "{step}"')
  return path, int(step)


def average_runs(run_dirs, out_dir: str):
  """Writes the mean of the runs' params (latest, or RUN@STEP's step) into `out_dir`;
  returns its RunDir."""
  if len(run_dirs) < 2:
    raise UserError('average needs at least two runs')
  out = RunDir(out_dir)
  if out.is_run() or out.has_checkpoints():
    raise UserError(f'{out_dir}: already a run; averaging writes a new one')
  members = [parse_member(d) for d in run_dirs]
  if len(set(members)) < len(members):
    raise UserError(f'{" ".join(run_dirs)}: a checkpoint is named twice')
  runs = [RunDir(path) for path, _ in members]
  configs = [run.model_config() for run in runs]
  for run, cfg in zip(runs[1:], configs[1:]):
    diff = shape_differences(configs[0], cfg)
    if diff:
      raise UserError(f'{run.path}: another model than {runs[0].path} ({"; ".join(diff)})')
  trees, steps = [], []
  for run, (_, wanted) in zip(runs, members):
    params, step = run.restore_params(wanted)
    trees.append(params)
    steps.append(int(step))
  shapes = [jax.tree_util.tree_map(jnp.shape, t) for t in trees]
  for run, s in zip(runs[1:], shapes[1:]):
    if s != shapes[0]:
      raise UserError(f'{run.path}: its checkpoint does not have the params of '
                      f'{runs[0].path}')
  with out.lock('average'):
    out.write_run_files(runs[0].train_config(), configs[0], runs[0].vocab_file)
    out.save_params(average_params(trees), max(steps),
                    {'averaged_runs': [files.absolute(run.path) for run in runs],
                     'steps': steps})
  return out


def _main(positional):
  if len(positional) < 3:
    raise UserError('usage: python -m bitmaps_jax average RUN[@STEP] RUN[@STEP] [...] OUT_RUN')
  *run_dirs, out_dir = positional
  average_runs(run_dirs, out_dir)
  print(f'{out_dir}: the mean of {len(run_dirs)} checkpoints\' weights')


def main(argv=None):
  cli.run_command(_main, sys.argv[1:] if argv is None else argv,
                  'python -m bitmaps_jax average')


if __name__ == '__main__':
  main()
