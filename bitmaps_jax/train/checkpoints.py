"""orbax checkpoints under workdir/checkpoints: train state + a small JSON of loop state.

orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-save leaves the previous checkpoint as the latest readable one.
"""

import os

import jax
import orbax.checkpoint as ocp

from bitmaps_jax.errors import UserError


def has_checkpoints(directory: str) -> bool:
  """Whether `directory` holds at least one finished checkpoint (step directories only)."""
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


class CheckpointStore:
  """Keeps the latest `keep` checkpoints; each has 'state' (pytree) and 'meta' (JSON)."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = False):
    self.directory = os.path.abspath(directory)
    # A save killed half-way leaves only a temporary directory; it is removed on the next start.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict):
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)))

  def wait(self):
    self.manager.wait_until_finished()

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

  def restore_params(self, step=None):
    """The 'params' subtree of a checkpoint, without knowing its optimizer, placed on this
    process's first device (whatever devices saved it)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f'{self.directory}: no checkpoint to restore')
    tree = self.manager.item_metadata(step)['state']
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    return out['state']['params']

  def close(self):
    self.manager.close()
