"""Run output: console progress, workdir/metrics.jsonl, TensorBoard, the loss plot.

Only the main process (process 0) writes; the others get a writer that does nothing. A remote
workdir gets the same files: metrics.jsonl is rewritten whole (object stores cannot append)
and TensorBoard writes into a local staging directory copied up at each point.
"""

import io
import json
import os
import sys
import time

from bitmaps_jax import files
from bitmaps_jax.train.rundir import LOSS_PLOT, TENSORBOARD, RunDir


class Reporter:
  """Writes metric points and shows progress. `resume_step` drops points logged after it."""

  def __init__(self, run, total_steps: int, enabled: bool = True, resume_step: int = 0):
    """`run`: the RunDir (or its path) whose files the points go to."""
    run = RunDir.of(run)
    self.run, self.total, self.enabled = run, total_steps, enabled
    self.path = run.metrics_file
    self._remote = files.is_remote(run.path)
    self._lines = []  # a remote metrics.jsonl, rewritten whole at each point
    self._tb = self._staged = None
    self._t0, self._s0 = time.time(), resume_step
    self._tty = sys.stderr.isatty()
    if enabled:
      files.makedirs(run.path)
      self._truncate_after(resume_step)
      tb_dir = run.file(TENSORBOARD)
      if self._remote:
        self._staged = files.StagedDir(tb_dir)
        tb_dir = self._staged.local
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(tb_dir)
      except ImportError:
        self._tb = None

  def _truncate_after(self, step: int):
    """A run killed after its last checkpoint logged points that the resumed run redoes."""
    if not files.exists(self.path):
      return
    lines = files.read_text(self.path).splitlines(keepends=True)
    keep = [ln for ln in lines if ln.strip() and json.loads(ln).get('step', 0) <= step]
    files.write_text(self.path, ''.join(keep))
    self._lines = keep

  def write(self, step: int, split: str, metrics: dict):
    if not self.enabled:
      return
    point = {'step': int(step), 'split': split, **{k: float(v) for k, v in metrics.items()}}
    line = json.dumps(point) + '\n'
    if self._remote:
      self._lines.append(line)
      files.write_text(self.path, ''.join(self._lines))
    else:
      with open(self.path, 'a') as f:
        f.write(line)
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f'{split}/{k}', float(v), int(step))
      self._tb.flush()
      if self._staged is not None:
        self._staged.sync()

  def progress(self, step: int, loss: float, items_per_s: float, unit: str = 'tok'):
    if not self.enabled:
      return
    done = step - self._s0
    elapsed = time.time() - self._t0
    eta = elapsed / max(done, 1) * (self.total - step)
    width = 24
    filled = int(width * step / max(self.total, 1))
    bar = '#' * filled + '.' * (width - filled)
    line = (f'[{bar}] {step}/{self.total} loss {loss:.4f} {items_per_s:,.0f} {unit}/s '
            f'ETA {_hms(eta)}')
    if self._tty:
      print('\r' + line, end='', file=sys.stderr, flush=True)
    else:
      print(line, file=sys.stderr, flush=True)

  def message(self, text: str):
    if self.enabled:
      if self._tty:
        print(file=sys.stderr)
      print(text, file=sys.stderr, flush=True)

  def close(self):
    if self._tb is not None:
      self._tb.close()
    if self._staged is not None:
      self._staged.close()


def _hms(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def read_metrics(run):
  path = RunDir.of(run).metrics_file
  if not files.exists(path):
    return []
  return [json.loads(ln) for ln in files.read_text(path).splitlines() if ln.strip()]


def plot_losses(run, out_name: str = LOSS_PLOT):
  """Training and validation loss against step, from metrics.jsonl."""
  run = RunDir.of(run)
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  points = read_metrics(run)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for split, style in (('train', '-'), ('valid', 'o-')):
    xs = [p['step'] for p in points if p['split'] == split and 'loss' in p]
    ys = [p['loss'] for p in points if p['split'] == split and 'loss' in p]
    if xs:
      ax.plot(xs, ys, style, label=f'{split} loss')
  ax.set_xlabel('step')
  ax.set_ylabel('loss')
  ax.set_title(os.path.basename(files.absolute(run.path).rstrip('/')))
  ax.grid(alpha=0.3)
  ax.legend()
  path = run.file(out_name)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=100)
  plt.close(fig)
  files.write_bytes(path, png.getvalue())
  return path
