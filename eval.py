"""Evaluates a GLUE fine-tuning run with its own config (overridable).

    python eval.py --workdir RUN [--split validation|test|train|holdout|FILE.tsv]
                   [--step N] [--config.data_dir=OTHER]

Prints every metric of the task (each with the range that resampling the examples gives
it), the predicted-label distribution and the confusion matrix (for STS-B, the spread of the
predicted scores), and writes RUN/eval_<split>.json (and the GLUE submission file, e.g.
CoLA.tsv or STS-B.tsv, for unlabeled test splits). --step picks an
earlier saved checkpoint (written as eval_<split>_step<N>.json), e.g. the one a holdout split
ranks first.
"""

import sys

from absl import app
from absl import flags
import ml_collections
from bitmaps_jax import cli
from bitmaps_jax.errors import UserError, exit_with_error
from bitmaps_jax.train.rundir import RunDir


def _run_config_from_argv(argv):
  """The run's saved config, found from --workdir before flags are parsed (for overrides)."""
  workdir = None
  for i, arg in enumerate(argv):
    if arg.startswith('--workdir='):
      workdir = arg.split('=', 1)[1]
    elif arg == '--workdir' and i + 1 < len(argv):
      workdir = argv[i + 1]
  if workdir:
    try:
      return RunDir(workdir).train_config()
    except UserError:
      pass  # reported by main, once the flags are parsed
  return ml_collections.ConfigDict()


FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Run directory written by train.py.', required=True)
flags.DEFINE_string('split', 'validation', 'validation (dev), test, train, holdout, or a TSV '
                    'file laid out like the task\'s dev file.')
flags.DEFINE_string('packed', '', 'Evaluate this packed model file (python -m bitmaps_jax '
                    'export) instead of the run\'s latest checkpoint.')
flags.DEFINE_integer('step', None, 'Evaluate this saved checkpoint step instead of the '
                     'latest.')
cli.define_config_dict('config', _run_config_from_argv(sys.argv),
                       'The run\'s config; override fields with --config.x=y.')


def main(argv):
  del argv
  import contextlib
  from bitmaps_jax.tasks.glue import evaluate
  cli.quiet_library_logs()
  run = RunDir(FLAGS.workdir)
  # The lock keeps a training run from writing while this one reads and writes; a run that
  # cannot be written (read-only) is still evaluated, and the results printed.
  writable = run.writable()
  try:
    if FLAGS.packed and FLAGS.step is not None:
      raise UserError('--step and --packed: a packed file holds one model; evaluate either '
                      'a checkpoint step or the file')
    with run.lock('eval') if writable else contextlib.nullcontext():
      run.train_config()  # one line if it is not a run or is unreadable
      out = evaluate.evaluate_run(FLAGS.workdir, FLAGS.config, FLAGS.split, FLAGS.packed,
                                  FLAGS.step)
      _print(out)
      for path in evaluate.write_results(FLAGS.workdir, FLAGS.split, out, FLAGS.step):
        print(f'  written: {path}')
  except UserError as e:
    exit_with_error(e)


def _print(out):
  source = (f'packed file {out["packed_file"]}' if out.get('packed_file')
            else f'checkpoint step {out["checkpoint_step"]}')
  from bitmaps_jax.tasks.glue import data as glue_data
  print(f'{out["task"]} {out["split"]}: {out["num_examples"]} examples, {source}')
  for key in (*glue_data.get_task(out['task']).metrics, 'loss'):
    if key in out:
      interval = out.get(f'{key}_interval95')
      span = (f'  (95% range over resampled examples: {interval[0]:.3f} to {interval[1]:.3f})'
              if interval else '')
      print(f'  {key:<9} {out[key]:.4f}{span}')
  if 'predicted_score_range' in out:
    lo, hi = out['predicted_score_range']
    print(f'  predicted scores: mean {out["predicted_score_mean"]:.3f}, {lo:.3f} to {hi:.3f}')
    return
  counts = out['predicted_label_counts']
  print('  predicted labels: ' + ', '.join(f'{k}: {c} ({c / max(sum(counts), 1):.1%})'
                                           for k, c in enumerate(counts)))
  if 'confusion_matrix' in out:
    print('  confusion matrix (rows: true label, columns: predicted)')
    for k, row in enumerate(out['confusion_matrix']):
      print(f'    {k}: ' + ' '.join(f'{v:6d}' for v in row))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
