"""Two processes (jax.distributed on localhost, gloo CPU collectives) train like one process
with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ['--config.dropout_rate=0', '--config.per_device_batch_size=4',
         '--config.num_train_steps=3', '--config.warmup_steps=0', '--config.log_every_steps=1',
         '--config.eval_every_steps=3', '--config.checkpoint_every_steps=3',
         '--config.data.builtin_documents=400']


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(p['split'], p['loss']) for p in map(json.loads, f)]


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices):
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def test_two_processes_match_one(tmp_path):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  subprocess.run([sys.executable, 'train.py', f'--workdir={one}', *FLAGS], cwd=REPO,
                 env=_env(4), check=True, capture_output=True, timeout=600)
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, 'train.py', f'--workdir={two}',
                             f'--coordinator_address=localhost:{port}', '--num_processes=2',
                             f'--process_id={i}', *FLAGS], cwd=REPO, env=_env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-2000:]
  a, b = _losses(one), _losses(two)
  assert [s for s, _ in a] == [s for s, _ in b] == ['train'] * 3 + ['valid']
  for (_, x), (_, y) in zip(a, b):
    assert x == pytest.approx(y, rel=1e-5)
  # Only process 0 wrote logs (each point once, one TensorBoard file); both took part in the
  # checkpoint; the run lock, held once for both, is gone.
  steps = [(p['split'], p['step']) for p in map(json.loads, open(os.path.join(two, 'metrics.jsonl')))]
  assert steps == [('train', 1), ('train', 2), ('train', 3), ('valid', 3)]
  assert len(os.listdir(os.path.join(two, 'tensorboard'))) == 1
  assert os.path.isdir(os.path.join(two, 'checkpoints', '3'))
  assert not os.path.exists(os.path.join(two, 'run.lock'))
