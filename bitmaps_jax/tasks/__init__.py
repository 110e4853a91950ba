"""The tasks train.py runs: MLM pretraining (`mlm`) and GLUE fine-tuning (`glue`)."""

import importlib

from bitmaps_jax.errors import UserError

# config.task -> the module whose run(config, workdir) trains it (imported when used).
RUNNERS = {'mlm': 'bitmaps_jax.tasks.mlm.task', 'glue': 'bitmaps_jax.tasks.glue.task'}


def run(config, run) -> dict:
  """Trains the config's task into `run` (a RunDir or its path); returns the final validation
  metrics.
  Raises `UserError` for mistakes the user can fix."""
  task = config.get('task', 'mlm')
  if task not in RUNNERS:
    raise UserError(f'config.task: unknown task {task!r}; expected one of {", ".join(RUNNERS)}')
  return importlib.import_module(RUNNERS[task]).run(config, run)
