"""Data parallelism in the pmap programming model, written with `jax.shard_map`.

One replica of the train state per device, the global batch split along a 1-D `data` mesh,
per-device dropout keys, gradients averaged with `lax.pmean`. `jax.pmap` itself is now built on
jit + shard_map and in maintenance mode, so the per-device step is a shard_map inside jax.jit.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bitmaps_jax.errors import UserError

AXIS = 'data'


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  if devices is None:
    return jax.make_mesh((jax.device_count(),), (AXIS,))
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def global_batch_size(config) -> int:
  """Examples per step over all devices: `config.global_batch_size` when set (it must split
  evenly over the devices), else per_device_batch_size x device count."""
  devices = jax.device_count()
  size = config.get('global_batch_size') or 0
  if not size:
    per_device = config.per_device_batch_size
    if not isinstance(per_device, int) or per_device <= 0:
      raise UserError(f'config.per_device_batch_size must be a positive integer, got '
                      f'{per_device!r}')
    return per_device * devices
  if not isinstance(size, int) or size < 0:
    raise UserError(f'config.global_batch_size must be a positive integer, got {size!r}')
  if size % devices:
    raise UserError(f'config.global_batch_size {size} does not split over {devices} devices '
                    f'(it must be a multiple of {devices})')
  return size


def global_batch(mesh, local_batch: dict) -> dict:
  """Global arrays from this process's rows (each host feeds its own shard)."""
  sharding = NamedSharding(mesh, P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def replicated(mesh) -> NamedSharding:
  """The sharding of a pytree held whole on every device of the mesh."""
  return NamedSharding(mesh, P())


def replicate(mesh, tree):
  """Places a pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def all_finite(tree) -> jax.Array:
  """Whether every floating-point leaf of `tree` is finite (integer leaves always are)."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
           if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def make_train_step(sums_fn, mesh, donate: bool = True, skip_nonfinite: bool = False):
  """jit(shard_map(step)): `sums_fn(params, batch, rng, train, frozen)` -> summed metrics.

  With `skip_nonfinite` a step whose loss, gradient norm or updated state (params, optimizer
  moments) is not finite returns the state unchanged: a finite gradient times a huge learning
  rate can still overflow the params. Each new leaf is selected against the old one where it
  is computed, so with `donate` the update can still write over the old state; the step then
  also returns whether it was applied.

  `frozen` is a replicated pytree that is read but not trained (a distillation teacher).
  The objective is the global mean of the summed 'loss' over the global 'count', so the
  step is the same whatever the number of devices: each device differentiates
  loss_sum * n_devices / global_count and `pmean` of those gradients is the global gradient.
  The params are cast to device-varying before differentiating, so each device holds its own
  gradient until `pmean` (as under pmap); differentiating the replicated params directly
  would make shard_map sum the gradients implicitly.
  Returns (new state, globally summed metrics, global gradient norm[, applied]).
  """
  n_dev = mesh.shape[AXIS]

  def per_device(state, batch, rng, frozen):
    rng = jax.random.fold_in(rng, jax.lax.axis_index(AXIS))

    def objective(params):
      sums = sums_fn(params, batch, rng, True, frozen)
      count = jax.lax.stop_gradient(jax.lax.psum(sums['count'], AXIS))
      return sums['loss'] * n_dev / jnp.maximum(count, 1.0), sums

    local_params = jax.lax.pcast(state.params, AXIS, to='varying')
    grads, sums = jax.grad(objective, has_aux=True)(local_params)
    grads = jax.lax.pmean(grads, AXIS)
    sums = jax.lax.psum(sums, AXIS)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                             for g in jax.tree_util.tree_leaves(grads)))
    if not skip_nonfinite:
      return state.apply_gradients(grads=grads), sums, grad_norm
    updated = state.apply_gradients(grads=grads)
    finite = jnp.isfinite(sums['loss']) & jnp.isfinite(grad_norm) & all_finite(updated)
    # The flag passes through a conditional, which XLA does not fuse: otherwise it copies the
    # whole check (a chain over every leaf) into each leaf's select below, and the step's
    # code and compile time grow with the square of the number of leaves (tiny BERT: 194,000
    # lines of optimized HLO and 50 s to compile, against 22,000 and 6 s).
    finite = jax.lax.cond(finite, lambda: jnp.bool_(True), lambda: jnp.bool_(False))
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old),
                                       updated, state)
    return new_state, sums, grad_norm, finite

  step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS), P(), P()),
                       out_specs=(P(),) * (4 if skip_nonfinite else 3))
  return jax.jit(step, donate_argnums=(0,) if donate else ())


def make_eval_step(sums_fn, mesh):
  """jit(shard_map): globally summed metrics of a batch, no dropout."""

  def per_device(params, batch, frozen):
    return jax.lax.psum(sums_fn(params, batch, None, False, frozen), AXIS)

  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS), P()),
                               out_specs=P()))


def make_predict_step(logits_fn, mesh):
  """jit(shard_map): per-example outputs, gathered along the batch."""

  def per_device(params, batch):
    return logits_fn(params, batch)

  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)),
                               out_specs=P(AXIS)))


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """Joins a multi-process run. With no arguments JAX finds the TPU slice's hosts itself;
  on CPU (for testing on one machine) the processes exchange data through gloo."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU only; TPUs ignore it
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
