"""Trains a (binary) BERT: MLM pretraining or GLUE fine-tuning, per the config.

    python train.py [--config configs/default.py] [--workdir runs/default] [--config.x=y ...]
"""

import os
import signal
import sys


def _stopped_before_start(signum, frame):
  """SIGTERM / SIGINT while Python loads its libraries: nothing is written yet, so stopping
  at once loses nothing (the training code takes over the signals once it starts)."""
  print(f'{signal.Signals(signum).name}: stopped while starting, before anything was written; '
        f'run the same command to start again', file=sys.stderr, flush=True)
  os._exit(0)


for _sig in (signal.SIGTERM, signal.SIGINT):
  signal.signal(_sig, _stopped_before_start)

from absl import app  # noqa: E402  (after the handlers: importing JAX takes seconds)
from absl import flags  # noqa: E402
from bitmaps_jax import cli  # noqa: E402

FLAGS = flags.FLAGS
cli.define_config_file('config', 'configs/default.py', 'Training configuration.')
flags.DEFINE_string('workdir', 'runs/default', 'Directory for checkpoints, logs and plots.')
flags.DEFINE_bool('distributed', False,
                  'Call jax.distributed.initialize() (multi-host; on Cloud TPU it needs no '
                  'other flag).')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process).')
flags.DEFINE_integer('process_id', None, 'This process\'s index (multi-process).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from bitmaps_jax.train import parallel
  if FLAGS.distributed or FLAGS.coordinator_address:
    # JAX's preemption service takes SIGTERM; Ctrl-C is Python's KeyboardInterrupt.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
  try:
    cli.train(cli.read_config('config'), FLAGS.workdir)
  except SystemExit as e:
    # A run that ends early (a mistake, a preemption) has printed its one line; skip the
    # interpreter's shutdown, where orbax's background threads can print pages of asyncio
    # errors after a failed restore. Files are closed and the run lock released by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(e.code if isinstance(e.code, int) else 1)

if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
