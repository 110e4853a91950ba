"""Entry points behind train.py: pick the task from the config, turn user errors into one line."""

import jax
from absl import logging

from bitmaps_jax.errors import UserError, exit_with_error


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """Joins a multi-process run. With no arguments JAX finds the TPU slice's hosts itself;
  on CPU (for testing on one machine) the processes exchange data through gloo."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU only; TPUs ignore it
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


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
    exit_with_error(e)
  if jax.process_index() == 0:
    print('final valid ' + ' '.join(f'{k} {v:.4f}' for k, v in result.items()))
  return result
