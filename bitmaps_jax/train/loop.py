"""The training loop shared by MLM pretraining and GLUE fine-tuning.

A task supplies the model and its initial params, a `batch_metrics` function of summed metrics
('loss' and 'count' at least), per-step training batches and evaluation batches. The loop owns
the rest: optimizer, data-parallel steps, checkpoints and resume, logging.
"""

import dataclasses
import queue
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils
from flax.training import train_state

from bitmaps_jax.errors import UserError
from bitmaps_jax.model import binary_params
from bitmaps_jax.model.bert import BertConfig
from bitmaps_jax.train import metrics, optim, parallel, reporting
from bitmaps_jax.train.rundir import RunDir


class NonFiniteError(UserError):
  """A step produced a non-finite loss or gradient."""


class Preempted(Exception):
  """SIGTERM or SIGINT arrived: the current step finished and a checkpoint was saved."""


class Interrupted(BaseException):
  """SIGTERM or SIGINT outside the training steps (start-up: loading, tokenizing, compiling;
  or the last writes after the final step). A BaseException, so that no library's `except
  Exception` swallows it on its way out through the run lock."""

  def __init__(self, signal_name: str, after_training: bool):
    super().__init__(signal_name)
    self.signal_name, self.after_training = signal_name, after_training

  def message(self) -> str:
    if self.after_training:
      return (f'{self.signal_name}: stopped after the last step, while finishing (its '
              f'checkpoint is saved); run the same command to finish')
    return (f'{self.signal_name}: stopped while starting, before the first step (no '
            f'checkpoint written); run the same command to start again')


# Callbacks whose exceptions Python prints as "Exception ignored" and drops.
_SWALLOWED_IN = ('_xla_gc_callback', '__del__')


class StartupSignals:
  """Turns SIGTERM / SIGINT into `Interrupted` for as long as the context lasts, outside
  the span where `StopSignal` lets the step finish and saves. Same rule as StopSignal on
  several hosts: the preemption service owns the signal there."""

  reached_training = False
  received = None  # kept too: a raise inside a garbage-collector callback is swallowed

  def __init__(self):
    self._previous = {}

  def __enter__(self):
    StartupSignals.reached_training = False
    StartupSignals.received = None
    if (threading.current_thread() is threading.main_thread() and
        jax.process_count() == 1):
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._raise)
    return self

  @staticmethod
  def _raise(signum, frame):
    StartupSignals.received = signal.Signals(signum).name
    if frame is not None and frame.f_code.co_name in _SWALLOWED_IN:
      return  # raised at the next check instead (StopSignal), not printed as 'ignored'
    raise Interrupted(signal.Signals(signum).name, StartupSignals.reached_training)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class StopSignal:
  """Notes SIGTERM / SIGINT (a preemptible TPU VM gets SIGTERM ~30 s before it goes) so the
  loop can finish its step and save. On several hosts SIGTERM is left to JAX's preemption
  service (a Python handler would hide it from the service): the notice of any host reaches
  all of them, and its sync point makes them stop at the same step; one host stopping alone
  would leave the others waiting in the next collective."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    if StartupSignals.received and not StartupSignals.reached_training:
      raise Interrupted(StartupSignals.received, False)
    StartupSignals.reached_training = True
    if (threading.current_thread() is threading.main_thread() and
        jax.process_count() == 1):
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._note)
    return self

  def _note(self, signum, frame):
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.received = self.received or 'SIGTERM'
          return True
      except RuntimeError:  # no preemption service (e.g. CPU test clusters)
        pass
    return self.received is not None


@dataclasses.dataclass
class Task:
  """What the loop needs to know about a task."""
  model_config: BertConfig
  params: Any
  # (params, batch, rng, train, frozen) -> {'loss': sum, 'count': n, ...}
  batch_metrics: Callable
  train_batch: Callable[[int], dict]  # step -> this process's rows of the global batch
  evaluate: Callable[[Any], dict]  # params -> validation metrics (e.g. `summed_evaluation`)
  items_per_step: int  # tokens (MLM) or examples (GLUE) per global batch, for throughput
  unit: str = 'tok'
  # A pytree the steps read but never train, handed to batch_metrics as `frozen` (GLUE: the
  # distillation teacher's params); the loop does not look inside.
  frozen: Any = None


def validate_loop_config(config):
  for field in ('num_train_steps', 'eval_every_steps',
                'checkpoint_every_steps', 'log_every_steps', 'keep_checkpoints'):
    value = config.get(field)
    if not isinstance(value, int) or value <= 0:
      raise UserError(f'config.{field} must be a positive integer, got {value!r}')


def check_config(config, model_cfg: BertConfig):
  """Everything the loop will refuse, checked before the run's files are written: a rejected
  config leaves the run's record (and a fresh workdir) as it was."""
  validate_loop_config(config)
  optim.make_optimizer(config, optim.make_schedules(config, config.num_train_steps),
                       binary_params.scale_paths(model_cfg),
                       binary_params.no_decay_paths(model_cfg))


class Prefetcher:
  """Builds the next batches on a background thread, `depth` ahead of the device, so input
  preparation overlaps the device step. Batches come in step order."""

  def __init__(self, make_batch: Callable[[int], Any], start: int, stop: int, depth: int = 2):
    self._queue = queue.Queue(maxsize=max(depth, 1))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, args=(make_batch, start, stop),
                                    daemon=True)
    self._thread.start()

  def _fill(self, make_batch, start, stop):
    for step in range(start, stop):
      if self._stop.is_set():
        return
      try:
        item = (step, make_batch(step), None)
      except BaseException as e:  # re-raised in the training thread
        item = (step, None, e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[2] is not None:
        return

  def next(self):
    step, batch, error = self._queue.get()
    if error is not None:
      raise error
    return step, batch

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)


def make_train_step_fn(task: Task, mesh, schedules: Optional[dict] = None):
  """The data-parallel step with a guard (a step whose loss, gradient or updated state is not
  finite leaves the state unchanged) and on-device bookkeeping: metric sums accumulate,
  skipped steps are counted and the first non-finite step is recorded without any transfer to
  the host. With `schedules` ({group: learning-rate schedule}) it also counts the applied
  steps that could change the model (a learning rate above 0 in some group): a run whose
  every such step was skipped has trained nothing.

  The guard is a conditional around the update inside the one compiled step, which donates
  the state and the log: the new params and Adam moments are written over the old ones
  instead of beside them, so the step holds one copy of the train state, not two. The caller
  must not use a state (or log) after passing it in."""
  raw_step = parallel.make_train_step(task.batch_metrics, mesh, donate=False,
                                      skip_nonfinite=True)

  def step(state, batch, rng, frozen, log, step_number):
    kept, sums, grad_norm, finite = raw_step(state, batch, rng, frozen)
    bad_loss = jnp.where(finite, log['bad_loss'], sums['loss'].astype(jnp.float32))
    bad_grad_norm = jnp.where(finite, log['bad_grad_norm'], grad_norm.astype(jnp.float32))
    sums = jax.tree_util.tree_map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), sums)
    moving = jnp.bool_(True) if schedules is None else jnp.any(jnp.stack(
        [s(step_number - 1) > 0 for s in schedules.values()]))
    log = {'sums': jax.tree_util.tree_map(jnp.add, log['sums'], sums),
           'steps': log['steps'] + finite.astype(jnp.int32),
           'trained': log['trained'] + (finite & moving).astype(jnp.int32),
           'skipped': log['skipped'] + (~finite).astype(jnp.int32),
           'first_bad': jnp.where((log['first_bad'] < 0) & ~finite, step_number,
                                  log['first_bad']),
           'bad_loss': bad_loss,
           'bad_grad_norm': bad_grad_norm,
           'grad_norm': grad_norm}
    return kept, log

  step = jax.jit(step, donate_argnums=(0, 4))
  step.raw = raw_step  # (state, batch, rng, frozen) -> (state, sums, grad norm, applied)
  return step


def make_state(config, task: Task, mesh):
  """(the initial train state on every device, {group: learning-rate schedule}): AdamW per
  `config`, with the binary schemes' scale group and weight-decay mask."""
  schedules = optim.make_schedules(config, config.num_train_steps)
  tx = optim.make_optimizer(config, schedules, binary_params.scale_paths(task.model_config),
                            binary_params.no_decay_paths(task.model_config))
  state = train_state.TrainState.create(apply_fn=None, params=task.params, tx=tx)
  # Buffers of its own: the train step donates the state, and placing arrays that are already
  # on the device can hand back the task's own params (which the loop reads again).
  copy = jax.jit(lambda s: jax.tree_util.tree_map(jnp.copy, s),
                 out_shardings=parallel.replicated(mesh))
  return copy(parallel.replicate(mesh, state)), schedules


def empty_log(sums_shape) -> dict:
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape)
  return {'sums': zeros, 'steps': jnp.zeros((), jnp.int32), 'trained': jnp.zeros((), jnp.int32),
          'skipped': jnp.zeros((), jnp.int32), 'first_bad': jnp.full((), -1, jnp.int32),
          'bad_loss': jnp.zeros((), jnp.float32), 'bad_grad_norm': jnp.zeros((), jnp.float32),
          'grad_norm': jnp.zeros((), jnp.float32)}


def summed_evaluation(batch_metrics: Callable, batches: Callable[[], Iterable[dict]]):
  """An evaluation hook: `batch_metrics` summed over the devices and over the fixed batches
  `batches()` yields (this process's rows of each global batch), then averaged."""
  mesh = parallel.data_mesh()
  eval_step = parallel.make_eval_step(batch_metrics, mesh)

  def evaluate(params) -> dict:
    total = None
    for batch in batches():
      batch = parallel.global_batch(mesh, batch)
      total = metrics.add(total, jax.device_get(eval_step(params, batch, None)))
    if total is None:
      raise UserError('validation split yields no batches')
    return metrics.means(total)

  return evaluate


def train_and_evaluate(config, run, task: Task) -> dict:
  """Trains `task` to `config.num_train_steps` in `run` (a RunDir or its path), resuming from
  its checkpoints if present.

  Ordinary steps make no device-to-host transfer: metrics, the finite flag and the skipped
  count stay on the device and are read every `log_every_steps` (and before each save).
  Returns the final validation metrics.
  """
  validate_loop_config(config)
  run = RunDir.of(run)
  mesh = parallel.data_mesh()
  total = config.num_train_steps
  is_main = jax.process_index() == 0
  state, schedules = make_state(config, task, mesh)
  frozen = parallel.replicate(mesh, task.frozen)
  store = run.checkpoint_store(keep=config.get('keep_checkpoints', 3),
                               async_save=config.get('async_checkpoints', False))
  dropout_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  start = 0
  had_checkpoints = store.latest_step() is not None
  try:
    restored = store.restore_latest(state, report=lambda m: print(m, file=sys.stderr)
                                    if is_main else None)
  except BaseException:
    store.close()
    raise
  if had_checkpoints and restored is None:
    store.close()
    raise UserError(f'{store.directory}: no checkpoint could be restored (each was set aside '
                    f'as damaged-STEP); move them away to start over')
  latest = None
  if restored is not None:
    latest, state, meta = restored
    start = int(meta['step'])
    dropout_key = jnp.asarray(np.asarray(meta['dropout_key'], np.uint32))
  reporter = reporting.Reporter(run, total, enabled=is_main, resume_step=start)
  if latest is not None:
    reporter.message(f'resuming from {store.directory}/{latest} (step {start})')
  train_step = make_train_step_fn(task, mesh, schedules)
  layout = binary_params.layout(task.model_config)
  flat_params = traverse_util.flatten_dict(task.params)
  initial_params = parallel.replicate(mesh, traverse_util.unflatten_dict(
      {p: flat_params[p] for p in layout})) if layout else None  # for the sign-flip rate
  flips = jax.jit(lambda p, p0: binary_params.sign_flip_fraction(task.model_config, p, p0))

  def save(step):
    # Batches are a function of (seed, step), so the step is also the data position.
    meta = {'step': step, 'data_position': step, 'seed': config.seed,
            'dropout_key': np.asarray(dropout_key).tolist()}
    store.save(step, state, meta)

  def check_finite(log):
    first_bad = int(log['first_bad'])
    if first_bad >= 0 and not config.get('skip_nonfinite_steps', False):
      store.wait()
      good = store.latest_step()
      raise NonFiniteError(
          f'step {first_bad}: non-finite loss, gradient or update (loss '
          f'{float(log["bad_loss"])}, gradient norm {float(log["bad_grad_norm"])}); '
          f'stopped, last good checkpoint: '
          f'{"none" if good is None else f"{store.directory}/{good}"}')
    if first_bad >= 0 and not first_skip:
      first_skip.extend([first_bad, float(log['bad_loss']), float(log['bad_grad_norm'])])

  def check_trained(log, done):
    """Before a save: a run whose every step (at a learning rate above 0) was skipped has
    trained nothing, and saying so beats saving its checkpoint and metrics as a result."""
    if trained_total + int(log['trained']) == 0 and skipped_total + int(log['skipped']) > 0:
      store.wait()
      bad, loss, norm = first_skip
      raise NonFiniteError(
          f'steps {start + 1}-{done}: every step was skipped as non-finite (first: step '
          f'{bad}, loss {loss}, gradient norm {norm}); nothing saved; lower '
          f'config.learning_rate or check the data')

  def check_valid(valid, done):
    """A model whose validation loss is not finite is no result to save or log: with a huge
    learning rate a finite step can still leave params whose next loss is NaN."""
    if 'loss' in valid and not np.isfinite(valid['loss']):
      store.wait()
      good = store.latest_step()
      raise NonFiniteError(
          f'step {done}: validation loss {valid["loss"]} (the model is no longer finite); '
          f'stopped, step {done} not saved, last good checkpoint: '
          f'{"none" if good is None else f"{store.directory}/{good}"}; lower '
          f'config.learning_rate')

  valid = {}
  log, log_shapes, t_last, skipped_total, trained_total = None, None, time.time(), 0, 0
  first_skip = []  # [step, loss, gradient norm] of the first skipped step
  empty_host = {'first_bad': -1, 'trained': 0, 'skipped': 0}
  prefetch = Prefetcher(lambda step: parallel.global_batch(mesh, task.train_batch(step)),
                        start, total, depth=config.get('prefetch_batches', 2))
  try:
    with StopSignal() as stop:
      for _ in range(start, total):
        step, batch = prefetch.next()
        done = step + 1
        if log is None:
          if log_shapes is None:
            log_shapes = jax.eval_shape(train_step.raw, state, batch, dropout_key, frozen)[1]
          log = empty_log(log_shapes)
        state, log = train_step(state, batch, jax.random.fold_in(dropout_key, step), frozen, log,
                                np.int32(done))
        boundary = done % config.checkpoint_every_steps == 0 or done == total
        if done % config.log_every_steps == 0 or boundary or done % config.eval_every_steps == 0:
          host = jax.device_get(log)
          check_finite(host)
          if boundary:
            check_trained(host, done)
        if done % config.log_every_steps == 0 or done == total:
          elapsed = max(time.time() - t_last, 1e-9)
          steps, skipped = int(host['steps']), int(host['skipped'])
          skipped_total += skipped
          trained_total += int(host['trained'])
          if skipped:
            reporter.message(f'step {done}: {skipped} non-finite step(s) skipped')
          if steps:
            point = metrics.means(host['sums'])
            point.update({('learning_rate' if g == 'weights' else f'learning_rate_{g}'):
                          float(s(step)) for g, s in schedules.items()})
            point.update(grad_norm=float(host['grad_norm']),
                         **{f'{task.unit}_per_s': steps * task.items_per_step / elapsed})
            if initial_params is not None:
              point['sign_flip_fraction'] = float(flips(state.params, initial_params))
            if skipped_total:
              point['skipped_steps'] = skipped_total
            reporter.write(done, 'train', point)
            reporter.progress(done, point['loss'], point[f'{task.unit}_per_s'], task.unit)
          log, t_last = None, time.time()
        if done % config.eval_every_steps == 0 or done == total:
          valid = task.evaluate(state.params)
          check_valid(valid, done)
          reporter.write(done, 'valid', valid)
          reporter.message(f'step {done} valid ' +
                           ' '.join(f'{k} {v:.4f}' for k, v in valid.items()))
          t_last = time.time()
        if boundary:
          save(done)
        if done < total and stop.should_stop(done):
          if not boundary:
            host = jax.device_get(log) if log is not None else empty_host
            check_finite(host)
            check_trained(host, done)
            save(done)
          store.wait()
          store.close()
          reporter.close()
          raise Preempted(f'{stop.received}: stopped after step {done}; checkpoint '
                          f'{store.directory}/{done} saved; run the same command to resume')
  finally:
    prefetch.close()
  if start >= total:
    valid = task.evaluate(state.params)
    reporter.message('already trained to num_train_steps; valid ' +
                     ' '.join(f'{k} {v:.4f}' for k, v in valid.items()))
  store.wait()
  store.close()
  if is_main:
    reporting.plot_losses(run)
  reporter.close()
  return valid
