"""GLUE tasks: the task table, TSV and TFDS readers, pair encoding, length-bucketed batches."""

import dataclasses
from typing import List, Optional

import numpy as np

from bitmaps_jax import files
from bitmaps_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """A GLUE task as its files lay it out.

  `tsv_layout`: 'cola' (4 columns, no header) or 'header' (columns found by the header's
  names). `text_columns`: the header names of the sentence (one) or of sentences 1 and 2
  (a pair task). `labels`: the label column's values in label-id order, as the files spell
  them (and as submission files write them); empty for a regression task, whose label is a
  float within `score_range`. `metrics`: what evaluation reports, the primary one first.
  Test files have an `index` column and the text columns, no label.
  """
  name: str
  tfds_name: str
  dir_name: str
  submission_file: str
  tsv_layout: str = 'header'
  text_columns: tuple = ('sentence',)
  label_column: str = 'label'
  labels: tuple = ('0', '1')
  metrics: tuple = ('accuracy',)
  score_range: tuple = (0.0, 5.0)

  @property
  def is_pair(self) -> bool:
    return len(self.text_columns) == 2

  @property
  def is_regression(self) -> bool:
    return not self.labels

  @property
  def num_labels(self) -> int:
    """Model outputs: one per label, or one score."""
    return len(self.labels) or 1

  @property
  def primary_metric(self) -> str:
    return self.metrics[0]


_PAIR = ('sentence1', 'sentence2')

# Another task is one more entry here.
TASKS = {
    'cola': GlueTask('cola', 'glue/cola', 'CoLA', 'CoLA.tsv', tsv_layout='cola',
                     metrics=('mcc', 'accuracy')),
    'sst2': GlueTask('sst2', 'glue/sst2', 'SST-2', 'SST-2.tsv'),
    'mrpc': GlueTask('mrpc', 'glue/mrpc', 'MRPC', 'MRPC.tsv',
                     text_columns=('#1 String', '#2 String'), label_column='Quality',
                     metrics=('f1', 'accuracy')),
    'rte': GlueTask('rte', 'glue/rte', 'RTE', 'RTE.tsv', text_columns=_PAIR,
                    labels=('entailment', 'not_entailment')),
    'stsb': GlueTask('stsb', 'glue/stsb', 'STS-B', 'STS-B.tsv', text_columns=_PAIR,
                     label_column='score', labels=(), metrics=('pearson', 'spearman')),
    'wnli': GlueTask('wnli', 'glue/wnli', 'WNLI', 'WNLI.tsv', text_columns=_PAIR),
}


def get_task(name: str) -> GlueTask:
  if name not in TASKS:
    raise UserError(f'config.task_name: unknown GLUE task {name!r}; expected one of '
                    f'{", ".join(TASKS)}')
  return TASKS[name]


@dataclasses.dataclass
class Examples:
  sentences: List[str]
  labels: np.ndarray  # int32 label ids, float32 scores (regression); -1 for unlabeled test rows
  idx: np.ndarray  # int32 example ids (GLUE's index column for test files)
  sentences2: Optional[List[str]] = None  # the second sentence of each pair (pair tasks)

  def take(self, rows) -> 'Examples':
    """The examples at `rows`, in that order."""
    return Examples([self.sentences[i] for i in rows], self.labels[rows], self.idx[rows],
                    None if self.sentences2 is None else [self.sentences2[i] for i in rows])


def read_tsv_lines(path: str, what: str = 'file') -> List[str]:
  """The lines of a TSV file as GLUE's files come: UTF-8 with or without a byte-order mark,
  LF or CRLF line ends; bytes that are not UTF-8 are one line naming FILE:LINE."""
  if not files.isfile(path):
    raise UserError(f'{path}: {what} not found')
  lines = []
  for n, raw_line in enumerate(files.read_bytes(path).split(b'\n'), start=1):
    if n == 1 and raw_line.startswith(b'\xef\xbb\xbf'):
      raw_line = raw_line[3:]
    try:
      lines.append(raw_line.decode('utf-8').rstrip('\r'))
    except UnicodeDecodeError as e:
      raise UserError(f'{path}:{n}: not UTF-8 text (byte {raw_line[e.start:e.start + 1]!r} at '
                      f'column {e.start + 1})') from None
  if lines and lines[-1] == '':
    lines.pop()
  return lines


def _parse_label(task: GlueTask, raw: str, where: str):
  if task.is_regression:
    lo, hi = task.score_range
    try:
      value = float(raw)
    except ValueError:
      raise UserError(f'{where}: {task.label_column} {raw!r} is not a number') from None
    if not lo <= value <= hi:  # NaN fails too
      raise UserError(f'{where}: {task.label_column} {raw} is outside {lo:g}..{hi:g}')
    return value
  if raw not in task.labels:
    raise UserError(f'{where}: unknown label {raw!r} (expected {" or ".join(task.labels)})')
  return task.labels.index(raw)


def _columns(task: GlueTask, header: List[str], wanted: List[str], where: str) -> List[int]:
  missing = [c for c in wanted if c not in header]
  if missing:
    raise UserError(f'{where}: header {header} has no column {missing[0]!r} '
                    f'(expected {wanted})')
  return [header.index(c) for c in wanted]


def read_tsv(task: GlueTask, path: str, split: str) -> Examples:
  """Reads one GLUE TSV file; every bad row is reported as FILE:LINE: problem."""
  lines = read_tsv_lines(path, f'{split} split file')
  is_test = split == 'test'
  has_header = is_test or task.tsv_layout == 'header'
  if has_header:
    if not lines:
      raise UserError(f'{path}: empty file (expected a header line)')
    header = lines[0].split('\t')
    wanted = (['index'] if is_test else []) + list(task.text_columns) + (
        [] if is_test else [task.label_column])
    cols_at = _columns(task, header, wanted, f'{path}:1')
    width = len(header)
  else:  # CoLA: source, label, original mark, sentence
    cols_at, width = [3, 1], 4
  texts, labels, idx = [[] for _ in task.text_columns], [], []
  first = 1 if has_header else 0
  for n, line in enumerate(lines[first:], start=first + 1):
    where = f'{path}:{n}'
    cols = line.split('\t')
    if len(cols) != width:
      raise UserError(f'{where}: expected {width} tab-separated columns, got {len(cols)}')
    values = [cols[i] for i in cols_at]
    if is_test:
      try:
        idx.append(int(values.pop(0)))
      except ValueError:
        raise UserError(f'{where}: index {cols[cols_at[0]]!r} is not an integer') from None
      labels.append(-1)
    else:
      labels.append(_parse_label(task, values.pop(), where))
      idx.append(len(labels) - 1)
    for text, value in zip(texts, values):
      if not value.strip():
        raise UserError(f'{where}: empty sentence')
      text.append(value)
  if not labels:
    raise UserError(f'{path}: no examples')
  return Examples(texts[0], np.asarray(labels, _label_dtype(task)), np.asarray(idx, np.int32),
                  texts[1] if task.is_pair else None)


def _label_dtype(task: GlueTask):
  return np.float32 if task.is_regression else np.int32


def split_file(task: GlueTask, data_dir: str, split: str) -> str:
  name = {'train': 'train', 'validation': 'dev', 'dev': 'dev', 'test': 'test'}.get(split)
  if name is None:
    raise UserError(f'unknown split {split!r}; expected train, validation (dev), test, holdout '
                    f'or a .tsv file')
  return files.join(data_dir, task.dir_name, f'{name}.tsv')


def read_tfds(task: GlueTask, split: str, data_dir: Optional[str] = None) -> Examples:
  """TFDS `glue/<task>`: fields sentence (or sentence1, sentence2), label (an id, or the score
  for regression; -1 on test), idx."""
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
  text = lambda key: [r[key].decode('utf-8') for r in rows]
  return Examples(text('sentence1' if task.is_pair else 'sentence'),
                  np.asarray([r['label'] for r in rows], _label_dtype(task)),
                  np.asarray([r['idx'] for r in rows], np.int32),
                  text('sentence2') if task.is_pair else None)


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
  return examples.take(keep)


# --------------------------------------------------------------------------- batching


def encode(examples: Examples, tokenizer, max_seq_length: int):
  """(ids, token types) per example, as BERT reads them: `[CLS] a [SEP]`, or for a pair
  `[CLS] a [SEP] b [SEP]` with token type 0 up to the first [SEP] and 1 after it; truncated
  to max_seq_length by trimming the longer sentence first."""
  pairs = () if examples.sentences2 is None else (examples.sentences2,)
  enc = tokenizer(examples.sentences, *pairs, truncation='longest_first',
                  max_length=max_seq_length, return_token_type_ids=True)
  return ([np.asarray(ids, np.int32) for ids in enc['input_ids']],
          [np.asarray(types, np.int32) for types in enc['token_type_ids']])


def tokenize(examples: Examples, tokenizer, max_seq_length: int) -> List[np.ndarray]:
  """The ids of `encode`."""
  return encode(examples, tokenizer, max_seq_length)[0]


def bucket_length(n: int, max_seq_length: int, multiple: int = 16) -> int:
  """Padded length for a batch whose longest row has n tokens: the next multiple of 16
  (so few shapes compile), capped at max_seq_length."""
  return min(max_seq_length, -(-n // multiple) * multiple)


def make_batch(token_ids, labels, rows, length: int, size: int, labeled=None,
               token_types=None) -> dict:
  """Pads `rows` to (size, length); padding rows get weight 0.

  `weights` marks the rows that count; `label_weights` those that also have a gold label
  (`labeled[r]`, default: every row with a label >= 0), so unlabeled rows can still be
  distilled from a teacher. `token_types` (one array per example, as `encode` gives them;
  None: all 0) mark the second sentence of a pair. Labels keep their dtype (float scores
  for regression)."""
  ids = np.zeros((size, length), np.int32)
  mask = np.zeros((size, length), np.int32)
  types = np.zeros((size, length), np.int32)
  out_labels = np.zeros((size,), np.asarray(labels).dtype)
  weights = np.zeros((size,), np.float32)
  label_weights = np.zeros((size,), np.float32)
  for j, r in enumerate(rows):
    t = token_ids[r]
    ids[j, :len(t)] = t
    mask[j, :len(t)] = 1
    if token_types is not None:
      types[j, :len(t)] = token_types[r]
    out_labels[j] = max(labels[r], 0)
    if labeled is None:
      weights[j] = label_weights[j] = 1.0 if labels[r] >= 0 else 0.0
    else:
      weights[j], label_weights[j] = 1.0, float(labeled[r])
  return {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types,
          'labels': out_labels, 'weights': weights, 'label_weights': label_weights}


class TrainBatches:
  """Shuffled, length-bucketed training batches addressed by step.

  Each epoch: permute with (seed, epoch), sort chunks of `pool` batches by length, cut into
  batches, shuffle the batch order. With bucketing off, every batch is max_seq_length long.
  `labeled` (optional, one bool per example) marks the examples with a gold label. Lengths
  are whole lengths: a pair's both sentences together.
  """

  def __init__(self, token_ids, labels, global_batch_size: int, max_seq_length: int, seed: int,
               bucketing: bool = True, pool: int = 1, process_index: int = 0,
               process_count: int = 1, labeled=None, token_types=None):
    if len(token_ids) < global_batch_size:
      raise UserError(f'{len(token_ids)} training examples, fewer than one global batch '
                      f'of {global_batch_size}')
    if pool < 1:
      raise UserError(f'config.bucket_pool must be at least 1, got {pool}')
    self.token_ids, self.labels, self.labeled = token_ids, labels, labeled
    self.token_types = token_types
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
    return make_batch(self.token_ids, self.labels, mine, length, self.local, self.labeled,
                      self.token_types)


def eval_batches(token_ids, labels, global_batch_size: int, max_seq_length: int,
                 process_index: int = 0, process_count: int = 1, token_types=None):
  """Yields (this process's batch, the global batch's example rows) over every example,
  sorted by length. Padding goes at the end, so global outputs [:len(rows)] match rows."""
  order = np.argsort([len(t) for t in token_ids], kind='stable')
  local = global_batch_size // process_count
  for start in range(0, len(order), global_batch_size):
    rows = order[start:start + global_batch_size]
    length = bucket_length(max(len(token_ids[r]) for r in rows), max_seq_length)
    mine = rows[process_index * local:(process_index + 1) * local]
    yield make_batch(token_ids, labels, mine, length, local, token_types=token_types), rows
