"""A prepared MLM corpus: tokenized once, packed into windows, stored as shards that training
opens in constant time and reads row by row.

Layout of a prepared directory:

    manifest.json          written last: the corpus is complete only when it exists
    progress.json          shards finished so far (an interrupted preparation resumes from it)
    vocab.txt              the tokenizer's vocabulary
    train-00000.npy ...    (windows, max_seq_length) uint16/uint32 token ids, one per shard
    valid-00000.npy

The directory may be remote (gs://...): preparing writes it locally first and uploads it,
manifest last; training copies it once to each host's local cache ($BITMAPS_JAX_CACHE, default
~/.cache/bitmaps_jax), since memory maps need local files, and reuses that copy afterwards.

Why numpy shards rather than grain + ArrayRecord: a window is a fixed-size row, so a memory
map gives O(1) random access with no new dependency, opening is reading one small JSON file,
and the order and masks are computed here from (seed, epoch, step, global row) with O(batch)
work, which is what resuming exactly and per-host sharding need.
"""

import contextlib
import dataclasses
import hashlib
import json
import mmap
import os
import time
from typing import List, Optional, Sequence

import numpy as np

from bitmaps_jax import files
from bitmaps_jax.errors import UserError

MANIFEST = 'manifest.json'
PROGRESS = 'progress.json'
FORMAT = 'bitmaps-jax-prepared-mlm-1'

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


# --------------------------------------------------------------------------- counter-based RNG


def _mix(x):
  """splitmix64's finaliser on uint64 arrays: a counter-based hash, so random values are a
  pure function of their coordinates (no generator state to carry or split)."""
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


# --------------------------------------------------------------------------- masking


def mask_rows(windows: np.ndarray, spec, seed: int, step: int, rows: np.ndarray) -> dict:
  """BERT masking (as mlm.data.mask_tokens) with every random draw a function of (seed, step,
  global row, position), so each host masks only its own rows and the result does not depend
  on how many hosts share the batch."""
  b, length = windows.shape
  p = spec.max_predictions
  r = np.asarray(rows, np.uint64)[:, None]
  candidates = ~np.isin(windows, spec.special_ids)
  scores = np.where(candidates, hash_uniform(seed, step, r, np.arange(length), 0), -1.0)
  positions = np.sort(np.argpartition(-scores, p - 1, axis=1)[:, :p], axis=1).astype(np.int32)
  valid = np.take_along_axis(candidates, positions, axis=1)
  labels = np.take_along_axis(windows, positions, axis=1).astype(np.int32)
  slots = np.arange(p)
  action = hash_uniform(seed, step, r, slots, 1)
  random_ids = (hash_uniform(seed, step, r, slots, 2) * spec.vocab_size).astype(np.int32)
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


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass
class Split:
  """The windows of one split, across its shards, memory-mapped (nothing read until used)."""
  shards: List[np.ndarray]
  starts: np.ndarray  # first global row of each shard

  def __len__(self) -> int:
    return int(self.starts[-1]) if len(self.starts) else 0

  def take(self, rows) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    shard = np.searchsorted(self.starts, rows, side='right') - 1
    out = np.empty((len(rows), self.shards[0].shape[1]), self.shards[0].dtype)
    for s in np.unique(shard):
      pick = shard == s
      local = rows[pick] - self.starts[s]
      order = np.argsort(local)  # sorted reads are kinder to the page cache
      out[np.flatnonzero(pick)[order]] = self.shards[s][local[order]]
    return out


def _read_manifest(path: str) -> dict:
  manifest = files.join(path, MANIFEST)
  if not files.isfile(manifest):
    hint = (' (preparation was interrupted: run prepare_corpus again to finish it)'
            if files.isfile(files.join(path, PROGRESS)) else '')
    raise UserError(f'{path}: not a prepared corpus (no {MANIFEST}){hint}')
  try:
    out = json.loads(files.read_text(manifest))
  except (OSError, ValueError) as e:
    raise UserError(f'{manifest}: unreadable ({e})') from None
  if out.get('format') != FORMAT:
    raise UserError(f'{manifest}: format {out.get("format")!r} is not {FORMAT}')
  return out


def local_cache_dir(remote: str) -> str:
  """Where this host keeps its copy of the remote prepared corpus `remote`."""
  root = os.environ.get('BITMAPS_JAX_CACHE') or os.path.expanduser('~/.cache/bitmaps_jax')
  return os.path.join(root, 'prepared', hashlib.sha256(remote.encode()).hexdigest()[:16])


def _corpus_files(manifest: dict) -> list:
  return ['vocab.txt'] + [e['file'] for split in ('train', 'valid')
                          for e in manifest['shards'][split]]


def _copy_file(src, dst, size=None, chunk: int = 64 << 20):
  """Streams `src` to `dst` (either may be remote) unless `dst` already has `size` bytes."""
  if size is not None and files.isfile(dst) and files.path(dst).stat().length == size:
    return
  if files.is_remote(dst):
    with files.path(src).open('rb') as fin, files.path(dst).open('wb') as fout:
      while block := fin.read(chunk):
        fout.write(block)
    return
  with files.path(src).open('rb') as fin, open(dst + '.tmp', 'wb') as fout:
    while block := fin.read(chunk):
      fout.write(block)
  os.replace(dst + '.tmp', dst)


def _copy_corpus(manifest: dict, src: str, dst: str):
  """Copies a complete prepared corpus (files `dst` already has whole are kept), manifest
  last, so an interrupted copy is never taken for a complete one."""
  files.makedirs(dst)
  sizes = {e['file']: e.get('bytes') for split in manifest['shards'].values() for e in split}
  for name in _corpus_files(manifest):
    _copy_file(files.join(src, name), files.join(dst, name), sizes.get(name))
  _write_json(files.join(dst, MANIFEST), manifest)


def fetch(remote: str, progress=print) -> str:
  """A local copy of the remote prepared corpus `remote`, downloaded once per host."""
  manifest = _read_manifest(remote)
  local = local_cache_dir(remote)
  if not files.isfile(os.path.join(local, MANIFEST)):
    t0 = time.time()
    _copy_corpus(manifest, remote, local)
    progress(f'{remote}: copied to {local} in {time.time() - t0:.1f} s')
  return local


class PreparedCorpus:
  """Opens a prepared directory: reads the manifest and maps the shards, O(1) in the corpus
  (a remote directory is first copied to this host's cache, see `fetch`)."""

  def __init__(self, path: str, progress=print):
    self.path = path
    self.manifest = _read_manifest(path)
    self._dir = fetch(path, progress) if files.is_remote(path) else path
    self.max_seq_length = self.manifest['max_seq_length']
    self.vocab_file = os.path.join(self._dir, 'vocab.txt')
    self.train = self._split('train')
    self.valid = self._split('valid')

  def _split(self, name) -> Split:
    shards, starts = [], [0]
    for entry in self.manifest['shards'][name]:
      file = os.path.join(self._dir, entry['file'])
      try:
        arr = np.load(file, mmap_mode='r')
      except (OSError, ValueError) as e:
        raise UserError(f'{file}: unreadable shard ({e})') from None
      raw = getattr(arr, '_mmap', None)
      if raw is not None and hasattr(mmap, 'MADV_RANDOM'):
        raw.madvise(mmap.MADV_RANDOM)  # rows are read in random order: no read-ahead
      if arr.shape != (entry['windows'], self.max_seq_length):
        raise UserError(f'{file}: shape {arr.shape}, manifest says '
                        f'({entry["windows"]}, {self.max_seq_length})')
      shards.append(arr)
      starts.append(starts[-1] + entry['windows'])
    return Split(shards, np.asarray(starts, np.int64))


class PreparedMLMBatches:
  """Training batches from a prepared split, addressed by step: the order is a Feistel
  permutation of (seed, epoch), and each process reads and masks only its own rows."""

  def __init__(self, split: Split, spec, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    from bitmaps_jax.tasks.mlm.data import HostRows
    self.split, self.spec, self.seed = split, spec, seed
    self.rows = HostRows.of(len(split), global_batch_size, process_index, process_count)
    self.steps_per_epoch = self.rows.steps_per_epoch

  def batch(self, step: int) -> dict:
    epoch, index = divmod(step, self.steps_per_epoch)
    rows = index * self.rows.global_batch_size + self.rows.offset + np.arange(self.rows.local)
    windows = self.split.take(FeistelPermutation(len(self.split), self.seed, epoch)(rows))
    return mask_rows(windows, self.spec, self.seed, step, rows)


# --------------------------------------------------------------------------- preparing


def _tokenize_chunk(args):
  docs, vocab, max_seq_length = args
  from bitmaps_jax.tasks import tokenizer as tokenizers
  from bitmaps_jax.tasks.mlm import data as mlm_data
  tok = tokenizers.load_tokenizer_for_packing(vocab)
  n_tokens = sum(len(x) for x in tok(list(docs), add_special_tokens=False)['input_ids'])
  try:
    windows = mlm_data.pack_windows(docs, tok, max_seq_length)
  except UserError:  # a chunk shorter than one window
    windows = np.zeros((0, max_seq_length), np.int32)
  return windows, n_tokens, len(docs)


def _ignore_sigint():
  """In each worker: Ctrl-C reaches the whole process group, and only the parent acts on it
  (it ends the workers); a worker's own KeyboardInterrupt is pages of tracebacks."""
  import signal
  signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Stop(BaseException):
  pass


@contextlib.contextmanager
def _signals_stop(error):
  """SIGTERM / SIGINT end the preparation between shards: the workers are ended (leaving the
  Pool's context) and `error(signal name)` is raised; the shards written so far stay, and a
  re-run resumes after them."""
  import signal
  import threading
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)

  previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield
  except _Stop as e:
    raise error(e.args[0]) from None
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


def _write_json(path, obj):
  files.write_text(path, json.dumps(obj, indent=2))


def _settings(documents, vocab: str, max_seq_length: int, docs_per_shard: int,
              validation_documents: int):
  """(the vocabulary file's bytes, the settings a preparation is made with)."""
  with open(vocab, 'rb') as f:
    vocab_bytes = f.read()
  return vocab_bytes, {'max_seq_length': max_seq_length, 'docs_per_shard': docs_per_shard,
                       'validation_documents': validation_documents,
                       'vocab_sha256': hashlib.sha256(vocab_bytes).hexdigest(),
                       'num_documents': len(documents)}


def _already_prepared(out_dir: str, manifest: dict, settings: dict, progress) -> dict:
  """A finished corpus re-prepared with the same settings is done; with others it is
  refused, naming each difference (the corpus on disk would not be what was asked for)."""
  made = dict(manifest.get('settings') or {}, max_seq_length=manifest.get('max_seq_length'),
              vocab_sha256=manifest.get('vocab_sha256'))
  differ = [f'{k} {made[k]!r} (asked {v!r})' for k, v in settings.items()
            if k in made and made[k] != v]
  if differ:
    raise UserError(f'{out_dir}: already prepared with other settings: ' + ', '.join(differ) +
                    '; use another directory')
  progress(f'{out_dir}: already prepared ({manifest["stats"]["windows"]} windows)')
  return manifest


def prepare(documents: Sequence[str], vocab: str, out_dir: str, max_seq_length: int = 128,
            docs_per_shard: int = 10000, validation_documents: int = 0,
            processes: Optional[int] = None, progress=print) -> dict:
  """Tokenizes `documents` with every core, packs them into windows and writes the shards.

  Documents are cut into shards of `docs_per_shard` (each packed on its own: a shard drops at
  most one window's worth of tail tokens); the last `validation_documents` form the valid
  split. Re-running on the same output finishes an interrupted preparation; on a complete one
  it reports that it is done. Returns the manifest.
  """
  if files.is_remote(out_dir):
    return _prepare_remote(documents, vocab, out_dir, progress, max_seq_length=max_seq_length,
                           docs_per_shard=docs_per_shard,
                           validation_documents=validation_documents, processes=processes)
  import multiprocessing
  os.makedirs(out_dir, exist_ok=True)
  manifest_path = os.path.join(out_dir, MANIFEST)
  vocab_bytes, settings = _settings(documents, vocab, max_seq_length, docs_per_shard,
                                    validation_documents)
  if os.path.isfile(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
    return _already_prepared(out_dir, manifest, settings, progress)
  vocab_sha = settings['vocab_sha256']
  from bitmaps_jax.tasks import tokenizer as tokenizers
  vocab_id = tokenizers.vocab_identity(tokenizers.load_tokenizer_for_packing(vocab))
  n_vocab = len(vocab_bytes.decode('utf-8').splitlines())
  dtype = np.uint16 if n_vocab <= 1 << 16 else np.uint32
  progress_path = os.path.join(out_dir, PROGRESS)
  done = {'settings': settings, 'shards': {}}
  if os.path.isfile(progress_path):
    with open(progress_path) as f:
      done = json.load(f)
    if done.get('settings') != settings:
      raise UserError(f'{out_dir}: holds an unfinished preparation with other settings '
                      f'({done.get("settings")}); use another directory')
  with open(os.path.join(out_dir, 'vocab.txt'), 'wb') as f:
    f.write(vocab_bytes)
  n_train = len(documents) - validation_documents
  jobs = []
  for split, lo, hi in (('train', 0, n_train), ('valid', n_train, len(documents))):
    for k, start in enumerate(range(lo, hi, docs_per_shard)):
      jobs.append((f'{split}-{k:05d}.npy', split, start, min(start + docs_per_shard, hi)))
  todo = [j for j in jobs if j[0] not in done['shards']]
  t0, tokens_now = time.time(), 0
  # spawn, not fork: the parent has JAX's threads running, and forking them can deadlock.
  with _signals_stop(lambda name: UserError(
      f'{out_dir}: {name}: preparation stopped after {len(done["shards"])} of {len(jobs)} '
      f'shards; run the same command to resume from there')), \
      multiprocessing.get_context('spawn').Pool(processes or os.cpu_count(),
                                                initializer=_ignore_sigint) as pool:
    chunks = ((documents[a:b], vocab, max_seq_length) for _, _, a, b in todo)
    for (name, split, a, b), (windows, n_tokens, n_docs) in zip(todo,
                                                                pool.imap(_tokenize_chunk, chunks)):
      path = os.path.join(out_dir, name)
      try:
        np.save(path + '.tmp.npy', windows.astype(dtype))
        os.replace(path + '.tmp.npy', path)
      except BaseException:
        if os.path.exists(path + '.tmp.npy'):
          os.remove(path + '.tmp.npy')
        raise
      done['shards'][name] = {'file': name, 'split': split, 'windows': int(len(windows)),
                              'tokens': int(n_tokens), 'documents': int(n_docs),
                              'bytes': int(os.path.getsize(path))}
      _write_json(progress_path, done)
      tokens_now += n_tokens
      rate = tokens_now / max(time.time() - t0, 1e-9)
      progress(f'{name}: {len(windows)} windows, {n_tokens} tokens '
               f'({len(done["shards"])}/{len(jobs)} shards, {rate:,.0f} tokens/s)')
  shards = {'train': [], 'valid': []}
  for name, *_ in jobs:
    entry = done['shards'][name]
    if entry['windows']:
      shards[entry['split']].append({'file': name, 'windows': entry['windows'],
                                     'bytes': entry['bytes']})
  entries = list(done['shards'].values())
  stats = {k: sum(e[k] for e in entries) for k in ('documents', 'tokens', 'windows', 'bytes')}
  stats['tokens_per_s'] = tokens_now / max(time.time() - t0, 1e-9)
  if not shards['train']:
    raise UserError(f'{out_dir}: the corpus gave no training window of {max_seq_length} tokens')
  manifest = {'format': FORMAT, 'max_seq_length': max_seq_length, 'dtype': np.dtype(dtype).name,
              'vocab_sha256': vocab_sha, 'shards': shards, 'stats': stats,
              'vocab': vocab_id, 'settings': settings}
  _write_json(manifest_path, manifest)
  return manifest


def _prepare_remote(documents, vocab, out_dir: str, progress, **settings) -> dict:
  """`prepare` into this host's cache for `out_dir`, then uploads it, manifest last (so a
  training host on this machine finds it without downloading)."""
  if files.isfile(files.join(out_dir, MANIFEST)):
    _, wanted = _settings(documents, vocab, **{k: settings[k] for k in (
        'max_seq_length', 'docs_per_shard', 'validation_documents')})
    return _already_prepared(out_dir, _read_manifest(out_dir), wanted, progress)
  local = local_cache_dir(out_dir)
  manifest = prepare(documents, vocab, local, progress=progress, **settings)
  t0 = time.time()
  _copy_corpus(manifest, local, out_dir)
  progress(f'{out_dir}: uploaded in {time.time() - t0:.1f} s')
  return manifest
