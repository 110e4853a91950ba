"""MLM batches: windows (in memory or memory-mapped) -> masked batches, addressed by step.

One batcher and one masking function serve every corpus source. Every random draw (the
epoch's order, the masked positions, their replacements) is a pure function of its
coordinates (seed, epoch or step, global row, position), so:

- resuming at step s reproduces the data exactly, with no generator state to save;
- each process of a multi-host run reads and masks only its own rows of the global batch,
  and the batch does not depend on how many processes share it;
- a batch costs O(batch) work, whatever the corpus size.
"""

import dataclasses
from typing import Iterator, List

import numpy as np

from bitmaps_jax.errors import UserError

# --------------------------------------------------------------------------- counter-based RNG


def _mix(x):
  """splitmix64's finaliser on uint64 arrays: a counter-based hash."""
  x = np.asarray(x, np.uint64)
  with np.errstate(over='ignore'):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def hash_uniform(*coords) -> np.ndarray:
  """Uniform floats in [0, 1) determined by broadcast integer coordinates."""
  h = np.uint64(0x9E3779B97F4A7C15)
  with np.errstate(over='ignore'):
    for c in coords:
      h = _mix(np.asarray(c, np.uint64) + h * np.uint64(0x100000001B3))
  return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class FeistelPermutation:
  """A pseudo-random permutation of range(n), a function of (seed, epoch): a balanced Feistel
  network on the next even power of two with cycle walking. Evaluating it on a batch of
  positions costs O(batch), whatever n."""

  def __init__(self, n: int, seed: int, epoch: int, rounds: int = 4):
    if n <= 0:
      raise ValueError('empty permutation')
    self.n = n
    bits = max(2, int(np.ceil(np.log2(max(n, 2)))))
    bits += bits % 2
    self.half = bits // 2
    self.mask = np.uint64((1 << self.half) - 1)
    self.keys = [np.uint64(_mix(np.uint64(seed * 1_000_003 + epoch * 7919 + r + 1)))
                 for r in range(rounds)]

  def _once(self, x):
    left, right = x >> np.uint64(self.half), x & self.mask
    for key in self.keys:
      left, right = right, left ^ (_mix(right ^ key) & self.mask)
    return (left << np.uint64(self.half)) | right

  def __call__(self, positions) -> np.ndarray:
    x = np.asarray(positions, np.uint64)
    out = self._once(x)
    outside = out >= self.n
    while outside.any():  # cycle walking: stays a bijection on range(n)
      out[outside] = self._once(out[outside])
      outside = out >= self.n
    return out.astype(np.int64)


# --------------------------------------------------------------------------- windows


@dataclasses.dataclass
class Windows:
  """The (num_windows, max_seq_length) token ids of one split, as one or more row blocks
  (arrays in memory or memory-mapped shards): nothing is read until `take` asks for rows."""
  blocks: List[np.ndarray]
  starts: np.ndarray  # first row of each block, then the total

  @classmethod
  def of(cls, *blocks: np.ndarray) -> 'Windows':
    starts = np.cumsum([0] + [len(b) for b in blocks]).astype(np.int64)
    return cls(list(blocks), starts)

  def __len__(self) -> int:
    return int(self.starts[-1]) if len(self.starts) else 0

  @property
  def width(self) -> int:
    return self.blocks[0].shape[1]

  def take(self, rows) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    block = np.searchsorted(self.starts, rows, side='right') - 1
    out = np.empty((len(rows), self.width), self.blocks[0].dtype)
    for s in np.unique(block):
      pick = block == s
      local = rows[pick] - self.starts[s]
      order = np.argsort(local)  # sorted reads are kinder to the page cache
      out[np.flatnonzero(pick)[order]] = self.blocks[s][local[order]]
    return out


# --------------------------------------------------------------------------- masking


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  vocab_size: int
  mask_token_id: int
  special_ids: tuple
  mask_prob: float = 0.15
  max_predictions: int = 20


def num_predictions(max_seq_length: int, mask_prob: float) -> int:
  """Fixed number of masked positions per window (BERT's max_predictions_per_seq)."""
  return max(1, int(round(mask_prob * (max_seq_length - 2))))


TRAIN_STREAM, EVAL_STREAM = 0, 1


def mask_rows(windows: np.ndarray, spec: MaskingSpec, seed: int, step: int, rows,
              stream: int = TRAIN_STREAM) -> dict:
  """BERT masking: `max_predictions` non-special positions per row; of those 80% become
  [MASK], 10% a random token, 10% stay. Every draw is a function of (seed, step, global row,
  position, stream). Returns the model inputs and the prediction targets."""
  b, length = windows.shape
  p = spec.max_predictions
  r = np.asarray(rows, np.uint64)[:, None]
  kind = 3 * stream  # each stream draws its own three kinds of value
  candidates = ~np.isin(windows, spec.special_ids)
  scores = np.where(candidates, hash_uniform(seed, step, r, np.arange(length), kind), -1.0)
  positions = np.sort(np.argpartition(-scores, p - 1, axis=1)[:, :p], axis=1).astype(np.int32)
  valid = np.take_along_axis(candidates, positions, axis=1)
  labels = np.take_along_axis(windows, positions, axis=1).astype(np.int32)
  slots = np.arange(p)
  action = hash_uniform(seed, step, r, slots, kind + 1)
  random_ids = (hash_uniform(seed, step, r, slots, kind + 2) * spec.vocab_size).astype(np.int32)
  replacement = np.where(action < 0.8, spec.mask_token_id,
                         np.where(action < 0.9, random_ids, labels))
  inputs = windows.astype(np.int32)
  inputs[np.arange(b)[:, None], positions] = np.where(valid, replacement, labels)
  return {
      'input_ids': inputs,
      'attention_mask': np.ones_like(inputs),
      'token_type_ids': np.zeros_like(inputs),
      'masked_positions': positions,
      'masked_labels': labels,
      'masked_weights': valid.astype(np.float32),
  }


# --------------------------------------------------------------------------- batches


@dataclasses.dataclass(frozen=True)
class HostRows:
  """This process's share of every global batch: rows [offset, offset + local)."""
  global_batch_size: int
  local: int
  offset: int

  @classmethod
  def of(cls, global_batch_size: int, process_index: int, process_count: int) -> 'HostRows':
    if global_batch_size % process_count:
      raise UserError(f'global batch {global_batch_size} is not divisible by '
                      f'{process_count} processes')
    local = global_batch_size // process_count
    return cls(global_batch_size, local, process_index * local)


class MLMBatches:
  """Training batches of masked windows, addressed by step: the order is a Feistel
  permutation of (seed, epoch), and this process reads and masks only its own rows."""

  def __init__(self, windows: Windows, spec: MaskingSpec, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    if len(windows) < global_batch_size:
      raise UserError(f'only {len(windows)} training windows, fewer than one global batch '
                      f'of {global_batch_size}; lower the batch size or max_seq_length')
    self.windows, self.spec, self.seed = windows, spec, seed
    self.rows = HostRows.of(global_batch_size, process_index, process_count)
    self.steps_per_epoch = len(windows) // global_batch_size
    self._epoch, self._permutation = None, None

  def global_rows(self, step: int) -> np.ndarray:
    """This process's rows of step's global batch, as positions in the epoch's order."""
    index = step % self.steps_per_epoch
    return index * self.rows.global_batch_size + self.rows.offset + np.arange(self.rows.local)

  def _order(self, epoch: int) -> FeistelPermutation:
    if self._epoch != epoch:  # one permutation per epoch, not per step
      self._epoch, self._permutation = epoch, FeistelPermutation(len(self.windows), self.seed,
                                                                 epoch)
    return self._permutation

  def batch(self, step: int) -> dict:
    rows = self.global_rows(step)
    order = self._order(step // self.steps_per_epoch)
    return mask_rows(self.windows.take(order(rows)), self.spec, self.seed, step, rows)


def eval_batches(windows: Windows, spec: MaskingSpec, global_batch_size: int, max_batches: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Fixed validation batches: the same windows and masks at every evaluation, whatever the
  training seed. The last batch is padded with weight-0 rows so every window counts."""
  host = HostRows.of(global_batch_size, process_index, process_count)
  n = -(-len(windows) // global_batch_size)
  if max_batches:
    n = min(n, max_batches)
  for i in range(n):
    rows = i * global_batch_size + host.offset + np.arange(host.local)
    real = rows < len(windows)
    batch = mask_rows(windows.take(np.where(real, rows, 0)), spec, 0, i, rows, EVAL_STREAM)
    batch['masked_weights'] *= real[:, None]
    yield batch
