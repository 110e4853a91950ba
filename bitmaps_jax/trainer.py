"""The training loop shared by MLM pretraining and GLUE fine-tuning.

A task supplies the model's initial params, a `sums(params, batch, rng, train)` function of
summed metrics ('loss' and 'count' at least), per-step training batches and evaluation batches.
The loop owns the rest: optimizer, data-parallel steps, checkpoints and resume, logging.
"""

import dataclasses
import os
import time
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from bitmaps_jax import checkpoints, metrics, optim, parallel, reporting
from bitmaps_jax.errors import UserError


class NonFiniteError(UserError):
  """A step produced a non-finite loss or gradient."""


@dataclasses.dataclass
class Task:
  """What the loop needs to know about a task."""
  params: Any
  sums: Callable  # (params, batch, rng, train, frozen) -> {'loss': sum, 'count': n, ...}
  train_batch: Callable[[int], dict]  # step -> this process's rows of the global batch
  eval_batches: Callable[[], Iterable[dict]]
  items_per_step: int  # tokens (MLM) or examples (GLUE) per global batch, for throughput
  unit: str = 'tok'
  eval_fn: Optional[Callable] = None  # (params) -> metrics dict; replaces the sums-based eval
  frozen: Any = None  # read-only arrays the steps need (a distillation teacher's params)


def validate_loop_config(config):
  for field in ('num_train_steps', 'eval_every_steps',
                'checkpoint_every_steps', 'log_every_steps', 'keep_checkpoints'):
    value = config.get(field)
    if not isinstance(value, int) or value <= 0:
      raise UserError(f'config.{field} must be a positive integer, got {value!r}')


def make_train_step_fn(task: Task, mesh):
  """Wraps the data-parallel step with a guard: a non-finite step leaves the state unchanged."""
  raw_step = parallel.make_train_step(task.sums, mesh, donate=False)

  @jax.jit
  def step(state, batch, rng, frozen):
    new_state, sums, grad_norm = raw_step(state, batch, rng, frozen)
    finite = jnp.isfinite(sums['loss']) & jnp.isfinite(grad_norm)
    kept = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return kept, sums, grad_norm, finite

  return step


def evaluate(task: Task, params, eval_step, mesh, frozen=None) -> dict:
  if task.eval_fn is not None:
    return task.eval_fn(params)
  total = None
  for batch in task.eval_batches():
    batch = parallel.global_batch(mesh, batch)
    total = metrics.add(total, jax.device_get(eval_step(params, batch, frozen)))
  if total is None:
    raise UserError('validation split yields no batches')
  return metrics.means(total)


def train_and_evaluate(config, workdir: str, task: Task) -> dict:
  """Trains `task` to `config.num_train_steps`, resuming from workdir/checkpoints if present.

  Returns the final validation metrics.
  """
  validate_loop_config(config)
  mesh = parallel.data_mesh()
  total = config.num_train_steps
  is_main = jax.process_index() == 0
  tx = optim.make_optimizer(config, total)
  lr_at = optim.learning_rate_schedule(config.learning_rate, total, config.warmup_steps,
                                       config.lr_decay, config.get('lr_end_factor', 0.0))
  state = train_state.TrainState.create(apply_fn=None, params=task.params, tx=tx)
  state = parallel.replicate(mesh, state)
  frozen = parallel.replicate(mesh, task.frozen)
  store = checkpoints.CheckpointStore(os.path.join(workdir, 'checkpoints'),
                                      keep=config.get('keep_checkpoints', 3),
                                      async_save=config.get('async_checkpoints', False))
  dropout_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  start = 0
  latest = store.latest_step()
  if latest is not None:
    state, meta = store.restore(latest, state)
    start = int(meta['step'])
    dropout_key = jnp.asarray(np.asarray(meta['dropout_key'], np.uint32))
  reporter = reporting.Reporter(workdir, total, enabled=is_main, resume_step=start)
  if latest is not None:
    reporter.message(f'resuming from {store.directory}/{latest} (step {start})')
  train_step = make_train_step_fn(task, mesh)
  eval_step = parallel.make_eval_step(task.sums, mesh)

  def save(step):
    # Batches are a function of (seed, step), so the step is also the data position.
    meta = {'step': step, 'data_position': step, 'seed': config.seed,
            'dropout_key': np.asarray(dropout_key).tolist()}
    store.save(step, state, meta)

  valid = {}
  accum, t_last, steps_since = None, time.time(), 0
  skipped = 0
  for step in range(start, total):
    batch = parallel.global_batch(mesh, task.train_batch(step))
    state, sums, grad_norm, finite = train_step(state, batch,
                                                jax.random.fold_in(dropout_key, step), frozen)
    done = step + 1
    if bool(finite):
      accum = metrics.add(accum, jax.device_get(sums))
      steps_since += 1
    elif not config.get('skip_nonfinite_steps', False):
      store.wait()
      good = store.latest_step()
      raise NonFiniteError(
          f'step {done}: non-finite loss or gradient (loss {float(sums["loss"])}, '
          f'grad norm {float(grad_norm)}); stopped, last good checkpoint: '
          f'{"none" if good is None else f"{store.directory}/{good}"}')
    else:
      skipped += 1
      reporter.message(f'step {done}: non-finite loss or gradient, update skipped')
    if accum is not None and (done % config.log_every_steps == 0 or done == total):
      elapsed = max(time.time() - t_last, 1e-9)
      rate = steps_since * task.items_per_step / elapsed
      point = metrics.means(accum)
      point.update(learning_rate=float(lr_at(step)), grad_norm=float(grad_norm),
                   **{f'{task.unit}_per_s': rate})
      if skipped:
        point['skipped_steps'] = skipped
      reporter.write(done, 'train', point)
      reporter.progress(done, point['loss'], rate, task.unit)
      accum, t_last, steps_since = None, time.time(), 0
    if done % config.eval_every_steps == 0 or done == total:
      valid = evaluate(task, state.params, eval_step, mesh, frozen)
      reporter.write(done, 'valid', valid)
      reporter.message(f'step {done} valid ' +
                       ' '.join(f'{k} {v:.4f}' for k, v in valid.items()))
      t_last = time.time()
    if done % config.checkpoint_every_steps == 0 or done == total:
      save(done)
  if start >= total:
    valid = evaluate(task, state.params, eval_step, mesh, frozen)
    reporter.message('already trained to num_train_steps; valid ' +
                     ' '.join(f'{k} {v:.4f}' for k, v in valid.items()))
  store.wait()
  store.close()
  if is_main:
    reporting.plot_losses(workdir)
  reporter.close()
  return valid
