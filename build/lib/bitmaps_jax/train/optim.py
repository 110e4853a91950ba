"""optax: AdamW with warm-up and linear/cosine decay, clipping, and the weight-decay mask."""

import optax
from flax import traverse_util

from bitmaps_jax.errors import UserError

# Leaves that never get weight decay, whatever the binarization: biases and LayerNorm scales.
FLOAT_NO_DECAY = ('bias', 'scale')


def learning_rate_schedule(peak: float, total_steps: int, warmup_steps: int,
                           decay: str = 'linear', end_factor: float = 0.0):
  """Linear warm-up from 0 to `peak`, then linear or cosine decay to `end_factor * peak`."""
  if not peak > 0:
    raise UserError(f'learning_rate must be positive, got {peak}')
  if warmup_steps < 0 or warmup_steps > total_steps:
    raise UserError(f'warmup_steps must be in [0, num_train_steps={total_steps}], '
                    f'got {warmup_steps}')
  decay_steps = max(total_steps - warmup_steps, 1)
  if decay == 'linear':
    after = optax.linear_schedule(peak, peak * end_factor, decay_steps)
  elif decay == 'cosine':
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end_factor)
  else:
    raise UserError(f'lr_decay must be linear or cosine, got {decay!r}')
  if warmup_steps == 0:
    return after
  warm = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warm, after], [warmup_steps])


def _leaf_labels(params, fn):
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({k: fn(k) for k in flat})


def make_schedules(config, total_steps: int) -> dict:
  """{group: learning-rate schedule}: 'weights', and 'scales' when `scale_learning_rate`
  gives binary scales their own peak. Built once; the optimizer and the logs share them."""
  make = lambda peak: learning_rate_schedule(peak, total_steps, config.warmup_steps,
                                             config.lr_decay, config.get('lr_end_factor', 0.0))
  out = {'weights': make(config.learning_rate)}
  if config.get('scale_learning_rate'):
    out['scales'] = make(config.scale_learning_rate)
  return out


def make_optimizer(config, schedules: dict, scale_paths=frozenset(), no_decay_paths=frozenset()):
  """The optimizer a training config asks for.

  `scale_paths` are the binary schemes' scale parameters (their own group when `schedules`
  has 'scales'); `no_decay_paths` those the schemes exclude from weight decay.
  `freeze_embeddings` / `freeze_encoder` keep those parts of `bert` fixed.
  """
  if config.weight_decay < 0:
    raise UserError(f'weight_decay must be >= 0, got {config.weight_decay}')
  decay_mask = lambda params: _leaf_labels(
      params, lambda path: path[-1] not in FLOAT_NO_DECAY and path not in no_decay_paths)

  def adamw(schedule):
    return optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                       weight_decay=config.weight_decay, mask=decay_mask)

  frozen = tuple(part for part, flag in (('embeddings', config.get('freeze_embeddings')),
                                         ('encoder', config.get('freeze_encoder'))) if flag)

  def label(path):
    if len(path) > 1 and path[0] == 'bert' and path[1] in frozen:
      return 'frozen'
    return 'scales' if 'scales' in schedules and path in scale_paths else 'weights'

  transforms = {group: adamw(s) for group, s in schedules.items()}
  if frozen:
    transforms['frozen'] = optax.set_to_zero()
  if len(transforms) == 1:
    tx = transforms['weights']
  else:
    tx = optax.multi_transform(transforms, lambda p: _leaf_labels(p, label))
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx
