"""orbax checkpoints under workdir/checkpoints: train state + a small JSON of loop state.

orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-save leaves the previous checkpoint as the latest readable one. An old step is dropped the
same way in reverse: renamed into `TRASH_DIR` first and only then deleted, so a crash mid-delete
never leaves a half-deleted step under a step's name (on local disks; object stores have no
rename and delete in place). A checkpoint damaged anyway (a truncated or deleted file) is set
aside by `restore_latest`, which falls back to the newest one that restores.
"""

import contextlib
import logging
import os
import sys
import tempfile
import time

import jax
import orbax.checkpoint as ocp
import tensorstore as ts

from bitmaps_jax import errors, files
from bitmaps_jax.errors import UserError


# Files every finished checkpoint has (the state is written with OCDBT).
REQUIRED_FILES = ('_CHECKPOINT_METADATA', 'state/_METADATA', 'state/manifest.ocdbt',
                  'meta/metadata')

# Where old steps go to be deleted (not a step's name, so never listed as a checkpoint).
TRASH_DIR = 'deleting'

# How long a failed save's temporary directory must stay removed before it counts as gone.
_SETTLE_SECONDS = 0.3


class _Capture:
  text = ''
  silence_after = False  # leave descriptor 2 silenced afterwards (errors.silence_stderr)


@contextlib.contextmanager
def _stderr_captured():
  """Collects what is written to file descriptor 2 meanwhile (orbax's background threads
  print pages of asyncio errors when tensorstore fails on a damaged file) into the yielded
  object's `text`."""
  sys.stderr.flush()
  saved = os.dup(2)
  capture = _Capture()
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield capture
    finally:
      sys.stderr.flush()
      if capture.silence_after:  # straight from the capture to /dev/null: threads still
        errors.silence_stderr(real_fd=saved)  # failing never reach the real stderr
      else:
        os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      capture.text = tmp.read().decode('utf-8', 'replace')


class _DropDiskFull(logging.Filter):
  """Drops orbax's own log records of a full disk (a traceback per thread): the save reports
  it in one line."""

  def filter(self, record):
    error = record.exc_info[1] if record.exc_info else None
    return not (files.is_disk_full(error) if error else
                'No space left on device' in record.getMessage())


# For good: an async save fails in a background thread, reported at the next save or wait.
logging.getLogger('absl').addFilter(_DropDiskFull())


def has_checkpoints(directory: str) -> bool:
  """Whether `directory` holds at least one finished checkpoint (step directories only)."""
  return files.isdir(directory) and any(n.isdigit() for n in files.listdir(directory))


class CheckpointStore:
  """Keeps the latest `keep` checkpoints; each has 'state' (pytree) and 'meta' (JSON)."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = False,
               read_only: bool = False):
    """`read_only`: for commands that only read a run (export, average, predict, eval, an
    init or teacher checkpoint), which may be training meanwhile: nothing is created, cleaned
    or deleted, so a live run's save in progress is left alone."""
    self.directory = files.absolute(directory)
    self.async_save = async_save
    self.read_only = read_only
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                             save_interval_steps=0)
    else:
      # A save killed half-way leaves only a temporary directory; it is removed on the next
      # start of the run that writes here.
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True,
                                             todelete_subdir=TRASH_DIR)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict):
    # orbax's save waits for the previous one anyway; waiting here first means no rename into
    # the trash is under way while it is emptied.
    with self._disk_full_reported(step):
      self.manager.wait_until_finished()
      self._empty_trash()
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)))
      if not self.async_save:
        self._empty_trash()

  def wait(self):
    with self._disk_full_reported(None):
      self.manager.wait_until_finished()
      self._empty_trash()

  @contextlib.contextmanager
  def _disk_full_reported(self, step):
    """A full disk during a save: the partial save is removed and a `UserError` names the
    directory and the space left (the same command resumes from the last complete step once
    there is room)."""
    failed = None
    with _stderr_captured() as noise:  # tensorstore's callbacks print after a failed write
      try:
        yield
      except Exception as e:  # orbax and tensorstore wrap the OSError in several types
        failed = e
        # Writes still in flight fail later, each with a traceback: from here to the end
        # of the process descriptor 2 prints nothing (the error line goes to the real one).
        noise.silence_after = files.is_disk_full(e)
    if failed is None or not files.is_disk_full(failed):
      sys.stderr.write(noise.text)  # nothing is hidden but a full disk's aftermath
      if failed is not None:
        raise failed
      return
    self._remove_partial_saves()
    free = files.free_space(self.directory)
    latest = self.latest_step()
    saving = f' while saving step {step}' if step is not None else ' while saving'
    raise errors.DiskFullError(
        f'{self.directory}: no space left on the device{saving}'
        f'{f" ({free})" if free else ""}; the partial save is removed; free some space and '
        f'run the same command to resume from '
        f'{"the start" if latest is None else f"step {latest}"}') from None

  def _remove_partial_saves(self):
    """Removes the failed step's temporary directory once nothing writes into it: the save's
    background thread is waited for, and the directory is removed until it has stayed away
    for `_SETTLE_SECONDS` (a write still in flight can recreate it)."""
    try:
      self.manager.wait_until_finished()
    except Exception:  # noqa: BLE001 -- the same full disk, reported by the caller
      pass
    start = clear_since = time.monotonic()
    while time.monotonic() - start < 30:
      partial = [n for n in (files.listdir(self.directory) if files.isdir(self.directory)
                             else []) if '.orbax-checkpoint-tmp' in n]
      for name in partial:
        try:
          files.rmtree(files.join(self.directory, name))
        except OSError:  # a file written meanwhile: the next round removes it
          pass
      if partial:
        clear_since = time.monotonic()
      elif time.monotonic() - clear_since >= _SETTLE_SECONDS:
        break
      time.sleep(0.05)
    self.manager.reload()

  def _empty_trash(self):
    """Deletes the steps orbax has set aside, including any a killed run left half-deleted.
    Only the process that writes checkpoints does it, and only while it writes."""
    trash = files.join(self.directory, TRASH_DIR)
    if not self.read_only and jax.process_index() == 0 and files.isdir(trash):
      files.rmtree(trash)

  def restore(self, step: int, target_state):
    """(state, meta) of `step`, with arrays laid out like `target_state`."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f'{self.directory}/{step}: checkpoint does not match this model '
                      f'({type(e).__name__}: {str(e).splitlines()[0][:200]})') from None
    return out['state'], out['meta']

  def _missing_files(self, step):
    """Why `step` is damaged, when a file it must have is missing (checked here: orbax's own
    failure on these is a page of asyncio noise), else None."""
    missing = [f for f in REQUIRED_FILES
               if not files.isfile(files.join(self.directory, str(step), f))]
    return f'missing {", ".join(missing)}' if missing else None

  def _unreadable_data(self, step):
    """Why `step`'s array data cannot be read back, else None. Every value of the state's
    OCDBT store is read here, synchronously: a truncated or missing data file raises in this
    thread, where orbax's own restore would fail inside its event loop and leave background
    tasks printing tracebacks long after the restore returned."""
    base = files.join(self.directory, str(step), 'state') + '/'
    if not files.is_remote(base):
      base = f'file://{base}'
    try:
      store = ts.KvStore.open({'driver': 'ocdbt', 'base': base}).result()
      keys = store.list().result()
      for start in range(0, len(keys), 64):  # a bounded number of values in memory at once
        for read in [store.read(k) for k in keys[start:start + 64]]:
          read.result()
    except Exception as e:  # noqa: BLE001 -- any failure to read means damage
      return self._damaged(step, e)
    return None

  def _damage(self, step):
    """Why `step` cannot be restored, checked without orbax, else None."""
    return self._missing_files(step) or self._unreadable_data(step)

  def _damaged(self, step, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return reason.split(' See full')[0][:160]

  def _newest_restorable(self, restore, report, set_aside: bool):
    """(step, restore(step)) for the newest step that restores, or None. A damaged step is
    reported in one line and, with `set_aside`, renamed `damaged-STEP` (nothing is deleted);
    a failure on a step whose params read back is not damage and is raised."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      reason = self._damage(step)
      if reason is None:
        try:
          with _stderr_captured() as noise:
            out = restore(step)
          sys.stderr.write(noise.text)  # a good restore hides nothing
          return step, out
        except Exception as e:  # orbax and tensorstore raise many types for damaged files
          with _stderr_captured():
            readable = self._params_readable(step)
          if readable:
            raise
          reason = self._damaged(step, e)
      action = f'set aside as {self._set_aside(step)}, ' if set_aside else ''
      report(f'{self.directory}/{step}: damaged checkpoint ({reason}); {action}'
             f'trying the previous one')
    return None

  def restore_latest(self, target_state, report=print):
    """(step, state, meta) of the newest checkpoint that restores, or None when there is none.

    A damaged checkpoint is reported and set aside; one that reads but does not fit
    `target_state` is another model's, a `UserError`.
    """
    found = self._newest_restorable(lambda step: self.restore(step, target_state), report,
                                    set_aside=True)
    return None if found is None else (found[0], *found[1])

  def restore_latest_params(self, report=print):
    """(params, step) of the newest checkpoint whose params read back, for commands that only
    read a run: a damaged one is reported in one line and skipped, not renamed."""
    found = self._newest_restorable(
        lambda step: jax.block_until_ready(self.restore_params(step)), report, set_aside=False)
    if found is None:
      raise UserError(f'{self.directory}: no checkpoint could be restored')
    step, params = found
    return params, step

  def _params_readable(self, step) -> bool:
    try:
      jax.block_until_ready(self.restore_params(step))
      return True
    except Exception:  # noqa: BLE001 -- any failure to read means damage
      return False

  def _set_aside(self, step) -> str:
    name, n = f'damaged-{step}', 1
    while files.exists(files.join(self.directory, name)):
      n += 1
      name = f'damaged-{step}-{n}'
    files.rename(files.join(self.directory, str(step)), files.join(self.directory, name))
    self.manager.reload()
    return name

  def restore_params(self, step=None):
    """The 'params' subtree of a checkpoint, without knowing its optimizer, placed on this
    process's first device (whatever devices saved it)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f'{self.directory}: no checkpoint to restore')
    saved_steps = sorted(self.manager.all_steps())
    if step not in saved_steps:
      saved = ', '.join(str(s) for s in saved_steps) or 'none'
      raise UserError(f'{self.directory}: no checkpoint of step {step} (saved steps: {saved})')
    tree = self.manager.item_metadata(step)['state']
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    return out['state']['params']

  def close(self):
    self.manager.close()
