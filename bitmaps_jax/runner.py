"""Entry points behind train.py: pick the task from the config, turn user errors into one line."""

import sys

import jax
from absl import logging

from bitmaps_jax.errors import UserError


def train(config, workdir: str):
  """Runs the config's task; a `UserError` exits with one line and status 2."""
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    if config.get('task', 'mlm') == 'mlm':
      from bitmaps_jax import pretraining
      result = pretraining.run(config, workdir)
    else:
      from bitmaps_jax import finetuning
      result = finetuning.run(config, workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:
    print('final valid ' + ' '.join(f'{k} {v:.4f}' for k, v in result.items()))
  return result
