"""Command-line plumbing of every entry point (train.py, eval.py, python -m bitmaps_jax ...):
absl flags throughout, and mistakes end in one line.

ml_collections applies `--config.field=value` overrides while the flag is being defined and
loads the config file when it is first read; both raise tracebacks for the two commonest
mistakes (a misspelt field, a wrong path), which these wrappers turn into `error: ...`, exit 2.
"""

import contextlib
import os
import sys

import jax
from absl import flags, logging
from ml_collections import config_flags

from bitmaps_jax import files, tasks
from bitmaps_jax.errors import UserError, exit_with_error
from bitmaps_jax.train import loop
from bitmaps_jax.train.rundir import RunDir


def _first_line(e: Exception) -> str:
  text = str(e).strip().strip('"\'').replace('\\n', '\n').replace("\\'", "'")
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def _flag_for(argv, message: str) -> str:
  """The --config.x=y argument a config error is about (the first whose field it names)."""
  flags = [a for a in argv if a.startswith('--config.')]
  for flag in flags:
    field = flag.split('=', 1)[0][len('--config.'):]
    if any(f"'{part}'" in message for part in field.split('.')):
      return flag
  return flags[0] if len(flags) == 1 else '--config'


def _define(define, *args, **kwargs):
  try:
    define(*args, **kwargs)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = _first_line(e)
    exit_with_error(f'{_flag_for(sys.argv, message)}: unknown config field {message}')


PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_config_file(name: str, default: str, help_string: str):
  """A config-file flag; a relative `default` is the project's file, wherever the command
  runs from."""
  if not os.path.isabs(default):
    default = os.path.join(PROJECT, default)
  _define(config_flags.DEFINE_config_file, name, default, help_string, lock_config=True)


def define_config_dict(name: str, config, help_string: str):
  _define(config_flags.DEFINE_config_dict, name, config, help_string)


def _config_file_error(flag: str, e: Exception) -> str:
  """One line for a config file that could not be loaded: missing, failing, no get_config."""
  text = str(e)
  errno = [l.strip() for l in text.splitlines() if l.strip().startswith('[Errno')]
  if errno:
    return f'{flag}: cannot load the config file ({errno[0]})'
  if isinstance(e, AttributeError) and 'get_config' in text:
    return f'{flag}: the config file has no get_config() function'
  if 'Error whilst parsing config file' in text:  # get_config raised; its last line says why
    last = [l.strip() for l in text.splitlines() if l.strip()][-1]
    return f'{flag}: {last.split("ValueError: ", 1)[-1]}'
  return f'{flag}: cannot load the config file ({type(e).__name__}: {_first_line(e)})'


def parse_flags(argv):
  """absl's flag parsing for app.run(..., flags_parser=...): a bad config argument, a config
  file that does not load, or a --config.x=y override the config does not have is one line,
  exit 2 (absl would print a traceback or a usage hint, exit 1)."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # absl's flags.Error, or ml_collections' own errors while parsing
    message = _first_line(e)
    overrides = [a for a in argv if a.startswith('--config.')]
    flag = _flag_for(argv, message) if overrides else '--config'
    if isinstance(e, (AttributeError, KeyError)) and flag.startswith('--config.'):
      exit_with_error(f'{flag}: unknown config field {message}')
    if isinstance(e, flags.Error) and 'Error whilst parsing config file' not in str(e):
      exit_with_error(str(e).replace('\n', ' ').strip())
    config = [a for a in argv if a == '--config' or a.startswith('--config=')]
    given = '--config'
    if config and config[0].startswith('--config='):
      given = config[0]
    elif config and argv.index(config[0]) + 1 < len(argv):
      given = f'--config={argv[argv.index(config[0]) + 1]}'
    exit_with_error(_config_file_error(given, e))


def read_config(name: str = 'config'):
  """The flag's config, or one line naming the config file that could not be loaded."""
  try:
    config = getattr(flags.FLAGS, name)
    config.keys()  # a config that failed to load raises on first use
    return config
  except Exception as e:  # ml_collections wraps every load failure (missing file, bad code)
    exit_with_error(_config_file_error(f'--{name}', e))


def quiet_library_logs():
  """Keeps library log records below ERROR off stderr: orbax's 'Waiting for previous save to
  complete took N seconds' at every save of a short interval, 'Given directory is read only'
  at every read, are nothing to act on and break the progress line. absl's own
  --verbosity=-1 (warnings) or 0 (info) shows them again."""
  verbosity = flags.FLAGS['verbosity'] if 'verbosity' in flags.FLAGS else None
  if verbosity is None or not verbosity.present:
    logging.set_verbosity(logging.ERROR)
    # gcsfs logs each failed request with a traceback, then raises it: reported once, by us.
    import logging as python_logging
    python_logging.getLogger('gcsfs').setLevel(python_logging.CRITICAL)


def train(config, workdir: str) -> dict:
  """What train.py runs: the config's task. A user's mistake ends in one line, exit 2; SIGTERM
  or SIGINT ends it after a checkpoint (during start-up: at once, nothing to save), with one
  line, exit 0."""
  quiet_library_logs()
  fresh = not files.is_remote(workdir) and not os.path.exists(workdir)
  try:
    with loop.StartupSignals():
      # One run per workdir; on several hosts, process 0 holds the lock for all of them.
      run = RunDir(workdir)
      with run.lock('train') if jax.process_index() == 0 else contextlib.nullcontext():
        result = tasks.run(config, run)
  except UserError as e:
    if fresh:  # a workdir this command made and left empty (config refused): not left behind
      with contextlib.suppress(OSError):
        os.rmdir(workdir)
    exit_with_error(e)
  except loop.Preempted as e:
    if jax.process_index() == 0:
      print(e, file=sys.stderr)
    sys.exit(0)
  except loop.Interrupted as e:  # the lock is released by now
    print(e.message(), file=sys.stderr)
    sys.exit(0)
  if jax.process_index() == 0:
    print('final valid ' + ' '.join(f'{k} {v:.4f}' for k, v in result.items()))
  return result


def define_once(define, name: str, *args, **kwargs):
  """Defines an absl flag that several commands share (absl refuses a second definition when
  their modules are imported together)."""
  if name not in flags.FLAGS:
    define(name, *args, **kwargs)


def run_command(main, argv, prog: str):
  """Parses absl flags from `argv` (without the program name) and calls main(positional args).
  Used by the `python -m bitmaps_jax` commands; a bad flag is one line, exit 2."""
  flags.FLAGS.unparse_flags()
  try:
    positional = flags.FLAGS([prog] + list(argv))[1:]
    quiet_library_logs()
    return main(positional)
  except flags.Error as e:
    exit_with_error(f'{prog}: {e}')
  except UserError as e:
    exit_with_error(e)
