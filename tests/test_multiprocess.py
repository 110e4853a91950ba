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


def test_sigterm_to_one_host_stops_every_host_at_the_same_step(tmp_path):
  """A preemption notice reaches one host; JAX's preemption sync point makes both stop at the
  same step and save one checkpoint together, and the same command resumes."""
  import signal
  import time
  run = str(tmp_path / 'run')
  flags = [*FLAGS, '--config.num_train_steps=400', '--config.checkpoint_every_steps=1000',
           '--config.eval_every_steps=1000', '--config.log_every_steps=5']

  def start(port, steps_flags):
    return [subprocess.Popen([sys.executable, 'train.py', f'--workdir={run}',
                              f'--coordinator_address=localhost:{port}', '--num_processes=2',
                              f'--process_id={i}', *steps_flags], cwd=REPO, env=_env(2),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]

  procs = start(_free_port(), flags)
  metrics = os.path.join(run, 'metrics.jsonl')
  deadline = time.time() + 300
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 2:
      break
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # the notice reaches process 1 only
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  steps = sorted(int(n) for n in os.listdir(os.path.join(run, 'checkpoints')) if n.isdigit())
  assert len(steps) == 1 and 0 < steps[0] < 400, steps
  assert f'stopped after step {steps[0]}' in outs[0], outs[0][-2000:]
  again = start(_free_port(), [*FLAGS, '--config.num_train_steps=' + str(steps[0] + 2),
                               '--config.log_every_steps=1'])
  for p in again:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
  logged = [json.loads(l)['step'] for l in open(metrics) if '"train"' in l]
  assert logged[-2:] == [steps[0] + 1, steps[0] + 2], logged
