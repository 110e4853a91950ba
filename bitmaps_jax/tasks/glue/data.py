"""GLUE single-sentence tasks: the task table, TSV and TFDS readers, length-bucketed batches."""

import dataclasses
from typing import List, Optional

import numpy as np

from bitmaps_jax import files
from bitmaps_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """A single-sentence GLUE task. `tsv_layout`: 'cola' (4 columns, no header) or 'header'
  (a `sentence<TAB>label` header); test files are `index<TAB>sentence` in both."""
  name: str
  tfds_name: str
  dir_name: str
  submission_file: str
  tsv_layout: str = 'header'
  num_labels: int = 2
  primary_metric: str = 'accuracy'


# Another single-sentence task is one more line here.
TASKS = {
    'cola': GlueTask('cola', 'glue/cola', 'CoLA', 'CoLA.tsv', tsv_layout='cola',
                     primary_metric='mcc'),
    'sst2': GlueTask('sst2', 'glue/sst2', 'SST-2', 'SST-2.tsv'),
}


def get_task(name: str) -> GlueTask:
  if name not in TASKS:
    raise UserError(f'config.task_name: unknown GLUE task {name!r}; expected one of '
                    f'{", ".join(TASKS)}')
  return TASKS[name]


@dataclasses.dataclass
class Examples:
  sentences: List[str]
  labels: np.ndarray  # int32; -1 for unlabeled test examples
  idx: np.ndarray  # int32 example ids (GLUE's index column for test files)


def read_tsv(task: GlueTask, path: str, split: str) -> Examples:
  """Reads one GLUE TSV file; every bad row is reported as FILE:LINE: problem."""
  if not files.isfile(path):
    raise UserError(f'{path}: {split} split file not found')
  sentences, labels, idx = [], [], []
  raw_lines = files.read_bytes(path).split(b'\n')
  lines = []
  for n, raw_line in enumerate(raw_lines, start=1):
    try:
      lines.append(raw_line.decode('utf-8'))
    except UnicodeDecodeError as e:
      raise UserError(f'{path}:{n}: not UTF-8 text (byte {raw_line[e.start:e.start + 1]!r} at '
                      f'column {e.start + 1})') from None
  if lines and lines[-1] == '':
    lines.pop()
  is_test = split == 'test'
  has_header = is_test or task.tsv_layout == 'header'
  first = 1 if has_header else 0
  if has_header:
    if not lines:
      raise UserError(f'{path}: empty file (expected a header line)')
    expected = ['index', 'sentence'] if is_test else ['sentence', 'label']
    header = lines[0].rstrip('\r').split('\t')
    if header != expected:
      raise UserError(f'{path}:1: header {header} is not {expected}')
  for n, line in enumerate(lines[first:], start=first + 1):
    cols = line.rstrip('\r').split('\t')
    if is_test:
      if len(cols) != 2:
        raise UserError(f'{path}:{n}: expected 2 tab-separated columns, got {len(cols)}')
      try:
        i = int(cols[0])
      except ValueError:
        raise UserError(f'{path}:{n}: index {cols[0]!r} is not an integer') from None
      sentence, label = cols[1], -1
    else:
      want = 4 if task.tsv_layout == 'cola' else 2
      if len(cols) != want:
        raise UserError(f'{path}:{n}: expected {want} tab-separated columns, got {len(cols)}')
      raw, sentence = (cols[1], cols[3]) if task.tsv_layout == 'cola' else (cols[1], cols[0])
      try:
        label = int(raw)
      except ValueError:
        label = -2
      if not 0 <= label < task.num_labels:
        raise UserError(f'{path}:{n}: unknown label {raw!r} (expected 0..{task.num_labels - 1})')
      i = len(sentences)
    if not sentence.strip():
      raise UserError(f'{path}:{n}: empty sentence')
    sentences.append(sentence)
    labels.append(label)
    idx.append(i)
  if not sentences:
    raise UserError(f'{path}: no examples')
  return Examples(sentences, np.asarray(labels, np.int32), np.asarray(idx, np.int32))


def split_file(task: GlueTask, data_dir: str, split: str) -> str:
  name = {'train': 'train', 'validation': 'dev', 'dev': 'dev', 'test': 'test'}.get(split)
  if name is None:
    raise UserError(f'unknown split {split!r}; expected train, validation (dev), test, holdout '
                    f'or a .tsv file')
  return files.join(data_dir, task.dir_name, f'{name}.tsv')


def read_tfds(task: GlueTask, split: str, data_dir: Optional[str] = None) -> Examples:
  """TFDS `glue/<task>` with fields sentence, label, idx (label -1 on test)."""
  import tensorflow_datasets as tfds
  split = {'dev': 'validation'}.get(split, split)
  try:
    ds = tfds.load(task.tfds_name, split=split, data_dir=data_dir or None, shuffle_files=False)
    rows = list(tfds.as_numpy(ds))
  except Exception as e:  # TFDS raises many types for a missing or unbuilt dataset
    raise UserError(f'tfds {task.tfds_name}[{split}]: cannot load '
                    f'({type(e).__name__}: {str(e).splitlines()[0][:200]})') from None
  if not rows:
    raise UserError(f'tfds {task.tfds_name}[{split}]: no examples')
  return Examples([r['sentence'].decode('utf-8') for r in rows],
                  np.asarray([r['label'] for r in rows], np.int32),
                  np.asarray([r['idx'] for r in rows], np.int32))


def load_split(task: GlueTask, split: str, data_dir: str = '', tfds_data_dir: str = '',
               holdout_examples: int = 0):
  """A split from a local GLUE directory when `data_dir` is set, else from TFDS.

  With `holdout_examples` N > 0, a fixed slice of N training sentences (the same for every run,
  whatever its seed) becomes the split 'holdout' and leaves 'train': a second labelled
  evaluation set that no run trains on. A split may also be the path of a TSV laid out like
  the task's dev file.
  """
  if split.endswith('.tsv'):
    return read_tsv(task, split, 'validation')
  if split == 'holdout' and not holdout_examples:
    raise UserError('split holdout needs config.holdout_examples > 0')
  source = 'train' if split == 'holdout' else split
  if data_dir:
    examples = read_tsv(task, split_file(task, data_dir, source), source)
  else:
    examples = read_tfds(task, source, tfds_data_dir)
  if source != 'train' or not holdout_examples:
    return examples
  n = len(examples.sentences)
  if holdout_examples >= n:
    raise UserError(f'holdout_examples {holdout_examples} leaves no training sentence of {n}')
  held = np.zeros(n, bool)
  held[np.random.default_rng(20240601).permutation(n)[:holdout_examples]] = True
  keep = np.flatnonzero(held if split == 'holdout' else ~held)
  return Examples([examples.sentences[i] for i in keep], examples.labels[keep],
                  examples.idx[keep])


# --------------------------------------------------------------------------- batching


def tokenize(examples: Examples, tokenizer, max_seq_length: int) -> List[np.ndarray]:
  """[CLS] sentence [SEP] ids per example, truncated to max_seq_length."""
  enc = tokenizer(examples.sentences, truncation=True, max_length=max_seq_length)
  return [np.asarray(ids, np.int32) for ids in enc['input_ids']]


def bucket_length(n: int, max_seq_length: int, multiple: int = 16) -> int:
  """Padded length for a batch whose longest row has n tokens: the next multiple of 16
  (so few shapes compile), capped at max_seq_length."""
  return min(max_seq_length, -(-n // multiple) * multiple)


def make_batch(token_ids, labels, rows, length: int, size: int, labeled=None) -> dict:
  """Pads `rows` to (size, length); padding rows get weight 0.

  `weights` marks the rows that count; `label_weights` those that also have a gold label
  (`labeled[r]`, default: every row with a label >= 0), so unlabeled rows can still be
  distilled from a teacher."""
  ids = np.zeros((size, length), np.int32)
  mask = np.zeros((size, length), np.int32)
  out_labels = np.zeros((size,), np.int32)
  weights = np.zeros((size,), np.float32)
  label_weights = np.zeros((size,), np.float32)
  for j, r in enumerate(rows):
    t = token_ids[r]
    ids[j, :len(t)] = t
    mask[j, :len(t)] = 1
    out_labels[j] = max(labels[r], 0)
    if labeled is None:
      weights[j] = label_weights[j] = 1.0 if labels[r] >= 0 else 0.0
    else:
      weights[j], label_weights[j] = 1.0, float(labeled[r])
  return {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': np.zeros_like(ids),
          'labels': out_labels, 'weights': weights, 'label_weights': label_weights}


class TrainBatches:
  """Shuffled, length-bucketed training batches addressed by step.

  Each epoch: permute with (seed, epoch), sort chunks of `pool` batches by length, cut into
  batches, shuffle the batch order. With bucketing off, every batch is max_seq_length long.
  `labeled` (optional, one bool per example) marks the examples with a gold label.
  """

  def __init__(self, token_ids, labels, global_batch_size: int, max_seq_length: int, seed: int,
               bucketing: bool = True, pool: int = 1, process_index: int = 0,
               process_count: int = 1, labeled=None):
    if len(token_ids) < global_batch_size:
      raise UserError(f'{len(token_ids)} training examples, fewer than one global batch '
                      f'of {global_batch_size}')
    if pool < 1:
      raise UserError(f'config.bucket_pool must be at least 1, got {pool}')
    self.token_ids, self.labels, self.labeled = token_ids, labels, labeled
    self.lengths = np.asarray([len(t) for t in token_ids])
    self.global_batch_size, self.max_seq_length = global_batch_size, max_seq_length
    self.seed, self.bucketing, self.pool = seed, bucketing, pool
    self.local = global_batch_size // process_count
    self.offset = process_index * self.local
    self.steps_per_epoch = len(token_ids) // global_batch_size
    self._epoch, self._batches = None, None

  def _epoch_batches(self, epoch: int):
    rng = np.random.default_rng((self.seed, epoch))
    order = rng.permutation(len(self.token_ids))[:self.steps_per_epoch * self.global_batch_size]
    if self.bucketing:
      chunk = self.pool * self.global_batch_size
      order = np.concatenate([c[np.argsort(self.lengths[c], kind='stable')]
                              for c in np.split(order, range(chunk, len(order), chunk))])
    batches = order.reshape(self.steps_per_epoch, self.global_batch_size)
    return batches[rng.permutation(len(batches))] if self.bucketing else batches

  def batch(self, step: int) -> dict:
    epoch, index = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._batches = epoch, self._epoch_batches(epoch)
    rows = self._batches[index]
    length = (bucket_length(int(self.lengths[rows].max()), self.max_seq_length)
              if self.bucketing else self.max_seq_length)
    mine = rows[self.offset:self.offset + self.local]
    return make_batch(self.token_ids, self.labels, mine, length, self.local, self.labeled)


def eval_batches(token_ids, labels, global_batch_size: int, max_seq_length: int,
                 process_index: int = 0, process_count: int = 1):
  """Yields (this process's batch, the global batch's example rows) over every example,
  sorted by length. Padding goes at the end, so global outputs [:len(rows)] match rows."""
  order = np.argsort([len(t) for t in token_ids], kind='stable')
  local = global_batch_size // process_count
  for start in range(0, len(order), global_batch_size):
    rows = order[start:start + global_batch_size]
    length = bucket_length(max(len(token_ids[r]) for r in rows), max_seq_length)
    mine = rows[process_index * local:(process_index + 1) * local]
    yield make_batch(token_ids, labels, mine, length, local), rows
