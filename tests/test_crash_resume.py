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

from bitmaps_jax.train import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16
FLAGS = ['--config.model=tiny', '--config.data.builtin_documents=300',
         '--config.data.vocab_size=128', '--config.max_seq_length=32',
         '--config.per_device_batch_size=2', f'--config.num_train_steps={STEPS}',
         '--config.warmup_steps=2', '--config.log_every_steps=1', '--config.eval_every_steps=4',
         '--config.checkpoint_every_steps=1', '--config.keep_checkpoints=2']


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
      ready = lambda: any(not n.isdigit() for n in _entries(ckpt_dir))
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
    for step in _finished_steps(ckpt_dir):
      store = checkpoints.CheckpointStore(ckpt_dir)
      params = store.restore_params(step)
      assert params, step
      store.close()
  assert kills >= 3 and mid_save_kills >= 1, (kills, mid_save_kills)

  proc = _train(crash_dir)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-2000:]
  assert 'resuming from' in out
  crash_valid, train_steps = _final_valid(crash_dir)
  assert crash_valid == full_valid
  assert train_steps == list(range(1, STEPS + 1))  # no step logged twice, none missing
  assert all(n.isdigit() for n in _entries(ckpt_dir)), _entries(ckpt_dir)  # no leftovers
