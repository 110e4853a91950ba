"""kill -9 at random moments of a real train.py run, including in the middle of checkpoint
saves: every run resumes from the last complete checkpoint, every checkpoint left on disk is
readable, and the final metrics equal those of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bitmaps_jax.model import bert
from bitmaps_jax.train import checkpoints
from bitmaps_jax.train.rundir import RunDir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16
FLAGS = ['--config=configs/default.py:tiny', f'--config.num_train_steps={STEPS}',
         '--config.eval_every_steps=4', '--config.checkpoint_every_steps=1',
         '--config.keep_checkpoints=2']


def _train(workdir):
  return subprocess.Popen([sys.executable, 'train.py', f'--workdir={workdir}', *FLAGS],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2'))


def _entries(ckpt_dir):
  return os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []


def _finished_steps(ckpt_dir):
  return sorted(int(n) for n in _entries(ckpt_dir) if n.isdigit())


def _kill_when(proc, ready, timeout=300):
  """SIGKILLs `proc` as soon as ready() holds; False if it ended first."""
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline:
    if ready():
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(0.002)
  proc.communicate()
  return False


def _final_valid(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    points = [json.loads(line) for line in f]
  valid = [p for p in points if p['split'] == 'valid']
  train_steps = [p['step'] for p in points if p['split'] == 'train']
  return valid[-1], train_steps


def test_kill_9_anywhere_then_resume_matches_uninterrupted(tmp_path):
  full_dir, crash_dir = str(tmp_path / 'full'), str(tmp_path / 'crash')
  out, _ = _train(full_dir).communicate(timeout=600)
  full_valid, _ = _final_valid(full_dir)

  ckpt_dir = os.path.join(crash_dir, 'checkpoints')
  rng = random.Random(0)
  kills, mid_save_kills = 0, 0
  for round_ in range(5):
    before = _finished_steps(ckpt_dir)
    proc = _train(crash_dir)
    if round_ % 2 == 0:
      # In the middle of a save: orbax writes into a temporary directory first.
      ready = lambda: any('.orbax-checkpoint-tmp' in n for n in _entries(ckpt_dir))
    else:
      # A random moment after this run made progress.
      delay = rng.uniform(0.0, 0.4)
      seen = []

      def ready():
        if not seen and _finished_steps(ckpt_dir) != before:
          seen.append(time.time())
        return bool(seen) and time.time() - seen[0] >= delay
    if not _kill_when(proc, ready):
      break
    kills += 1
    mid_save_kills += round_ % 2 == 0
    # Whatever the kill interrupted, every checkpoint that looks complete restores.
    model_cfg = RunDir(crash_dir).model_config()
    expected = jax.tree_util.tree_map(lambda s: (s.shape, s.dtype),
                                      bert.param_shapes(model_cfg))
    for step in _finished_steps(ckpt_dir):
      store = checkpoints.CheckpointStore(ckpt_dir)
      params = store.restore_params(step)
      store.close()
      assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), params) == expected, step
      assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(params))
  assert kills >= 3 and mid_save_kills >= 1, (kills, mid_save_kills)

  proc = _train(crash_dir)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-2000:]
  assert 'resuming from' in out
  crash_valid, train_steps = _final_valid(crash_dir)
  assert crash_valid == full_valid
  assert train_steps == list(range(1, STEPS + 1))  # no step logged twice, none missing
  assert all(n.isdigit() for n in _entries(ckpt_dir)), _entries(ckpt_dir)  # no leftovers


def test_sigterm_saves_and_the_next_run_loses_no_step(tmp_path):
  full_dir, stop_dir = str(tmp_path / 'full'), str(tmp_path / 'stop')
  flags = ['--config.checkpoint_every_steps=100']  # only the stop and the end save
  full = subprocess.run([sys.executable, 'train.py', f'--workdir={full_dir}', *FLAGS, *flags],
                        cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2'))
  assert full.returncode == 0, full.stderr[-2000:]
  scratch = tmp_path / 'tmp'  # the stopped run's temporary files: none may stay behind
  scratch.mkdir()
  proc = subprocess.Popen([sys.executable, 'train.py', f'--workdir={stop_dir}', *FLAGS, *flags],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, TMPDIR=str(scratch),
                                   XLA_FLAGS='--xla_force_host_platform_device_count=2'))
  metrics = os.path.join(stop_dir, 'metrics.jsonl')
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:  # after a few logged steps
    if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 3:
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  last = [l for l in err.strip().splitlines() if l.startswith('SIGTERM')]
  assert len(last) == 1 and 'checkpoint' in last[0] and 'saved' in last[0], err[-2000:]
  assert not [n for n in os.listdir(scratch) if n.startswith('bitmaps_jax_vocab_')]
  stopped_at = _finished_steps(os.path.join(stop_dir, 'checkpoints'))
  assert len(stopped_at) == 1 and 0 < stopped_at[0] < STEPS, stopped_at
  again = subprocess.run([sys.executable, 'train.py', f'--workdir={stop_dir}', *FLAGS, *flags],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2'))
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'resuming from' in again.stderr
  stop_valid, train_steps = _final_valid(stop_dir)
  full_valid, _ = _final_valid(full_dir)
  assert stop_valid == full_valid
  assert train_steps == list(range(1, STEPS + 1))  # no step lost, none logged twice


@pytest.mark.parametrize('sig,when', [(signal.SIGTERM, 'importing'), (signal.SIGTERM, 'locked'),
                                      (signal.SIGINT, 'locked')])
def test_a_signal_during_start_up_is_one_line_and_leaves_the_run_clean(tmp_path, sig, when):
  """Stopped while Python imports JAX, or later while the run (locked) loads, tokenizes and
  compiles: one line, no lock or half-written file left, and the same command starts."""
  workdir = tmp_path / 'run'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  command = [sys.executable, 'train.py', f'--workdir={workdir}', *FLAGS]
  proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)
  if when == 'importing':
    time.sleep(0.3)
  else:
    deadline = time.time() + 120
    while not (workdir / 'run.lock').exists() and time.time() < deadline:
      time.sleep(0.005)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=300)
  name = signal.Signals(sig).name
  assert proc.returncode == 0, err[-3000:]
  lines = err.strip().splitlines()
  assert lines and lines[-1].startswith(f'{name}: stopped while starting'), err[-3000:]
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err[-3000:]
  left = [str(p) for p in workdir.rglob('*')] if workdir.exists() else []
  assert not any(p.endswith(('run.lock', '.tmp')) or 'orbax-checkpoint-tmp' in p
                 for p in left), left
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
