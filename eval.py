"""Evaluates a GLUE fine-tuning run with its own config (overridable).

    python eval.py --workdir RUN [--split validation|test|train] [--config.data_dir=OTHER]

Prints the metrics, the predicted-label distribution and the confusion matrix, and writes
RUN/eval_<split>.json (and CoLA.tsv / SST-2.tsv for unlabeled test splits).
"""

import json
import os
import sys

from absl import app
from absl import flags
import ml_collections
from bitmaps_jax import cli
from bitmaps_jax.errors import UserError, exit_with_error


def _run_config_from_argv(argv):
  """The run's saved config, found from --workdir before flags are parsed (for overrides)."""
  workdir = None
  for i, arg in enumerate(argv):
    if arg.startswith('--workdir='):
      workdir = arg.split('=', 1)[1]
    elif arg == '--workdir' and i + 1 < len(argv):
      workdir = argv[i + 1]
  path = os.path.join(workdir or '', 'train_config.json')
  if workdir and os.path.isfile(path):
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  return ml_collections.ConfigDict()


FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Run directory written by train.py.', required=True)
flags.DEFINE_string('split', 'validation', 'validation (dev), test or train.')
cli.define_config_dict('config', _run_config_from_argv(sys.argv),
                       'The run\'s config; override fields with --config.x=y.')


def main(argv):
  del argv
  from absl import logging
  from bitmaps_jax import glue_eval
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  try:
    if not os.path.isfile(os.path.join(FLAGS.workdir, 'train_config.json')):
      raise UserError(f'{FLAGS.workdir}: not a run directory (no train_config.json)')
    out = glue_eval.evaluate_run(FLAGS.workdir, FLAGS.config, FLAGS.split)
  except UserError as e:
    exit_with_error(e)
  print(f'{out["task"]} {out["split"]}: {out["num_examples"]} examples, checkpoint step '
        f'{out["checkpoint_step"]}')
  for key in ('mcc', 'accuracy', 'loss'):
    if key in out:
      print(f'  {key:<9} {out[key]:.4f}')
  counts = out['predicted_label_counts']
  print('  predicted labels: ' + ', '.join(f'{k}: {c} ({c / max(sum(counts), 1):.1%})'
                                           for k, c in enumerate(counts)))
  if 'confusion_matrix' in out:
    print('  confusion matrix (rows: true label, columns: predicted)')
    for k, row in enumerate(out['confusion_matrix']):
      print(f'    {k}: ' + ' '.join(f'{v:6d}' for v in row))
  if 'submission_file' in out:
    print(f'  predictions: {out["submission_file"]}')
  print(f'  written: {os.path.join(FLAGS.workdir, "eval_" + FLAGS.split + ".json")}')


if __name__ == '__main__':
  app.run(main)
