"""Command-line plumbing shared by train.py and eval.py: `--config` mistakes end in one line.

ml_collections applies `--config.field=value` overrides while the flag is being defined and
loads the config file when it is first read; both raise tracebacks for the two commonest
mistakes (a misspelt field, a wrong path), which these wrappers turn into `error: ...`, exit 2.
"""

import sys

from absl import flags
from ml_collections import config_flags

from bitmaps_jax.errors import exit_with_error


def _first_line(e: Exception) -> str:
  text = str(e).strip().strip('"\'').replace('\\n', '\n').replace("\\'", "'")
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def _overrides(argv) -> str:
  return ' '.join(a for a in argv if a.startswith('--config.')) or '--config'


def _define(define, *args, **kwargs):
  try:
    define(*args, **kwargs)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    exit_with_error(f'{_overrides(sys.argv)}: unknown config field {_first_line(e)}')


def define_config_file(name: str, default: str, help_string: str):
  _define(config_flags.DEFINE_config_file, name, default, help_string, lock_config=True)


def define_config_dict(name: str, config, help_string: str):
  _define(config_flags.DEFINE_config_dict, name, config, help_string)


def read_config(name: str = 'config'):
  """The flag's config, or one line naming the config file that could not be loaded."""
  try:
    config = getattr(flags.FLAGS, name)
    config.keys()  # a config that failed to load raises on first use
    return config
  except Exception as e:  # ml_collections wraps every load failure (missing file, bad code)
    reason = [l.strip() for l in str(e).splitlines() if l.strip().startswith('[Errno')]
    exit_with_error(f'--{name}: cannot load the config file ({reason[0] if reason else _first_line(e)})')


def train(config, workdir: str) -> dict:
  """What train.py runs: the config's task; a user's mistake ends in one line, exit 2."""
  import jax
  from absl import logging
  from bitmaps_jax import tasks
  from bitmaps_jax.errors import UserError
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    result = tasks.run(config, workdir)
  except UserError as e:
    exit_with_error(e)
  if jax.process_index() == 0:
    print('final valid ' + ' '.join(f'{k} {v:.4f}' for k, v in result.items()))
  return result
