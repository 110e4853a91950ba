"""Reading a prepared MLM corpus: the manifest, the host's local copy of a remote corpus, and
its shards memory-mapped as `batches.Windows` (opening is O(1) in the corpus)."""

import hashlib
import json
import mmap
import os
import time

import numpy as np

from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.tasks.mlm.batches import Windows

MANIFEST = 'manifest.json'
PROGRESS = 'progress.json'
FORMAT = 'bitmaps-jax-prepared-mlm-1'


def read_manifest(path: str) -> dict:
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


def write_json(path, obj):
  files.write_text(path, json.dumps(obj, indent=2))


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


def copy_corpus(manifest: dict, src: str, dst: str):
  """Copies a complete prepared corpus (files `dst` already has whole are kept), manifest
  last, so an interrupted copy is never taken for a complete one."""
  files.makedirs(dst)
  sizes = {e['file']: e.get('bytes') for split in manifest['shards'].values() for e in split}
  for name in _corpus_files(manifest):
    _copy_file(files.join(src, name), files.join(dst, name), sizes.get(name))
  write_json(files.join(dst, MANIFEST), manifest)


def fetch(remote: str, progress=print) -> str:
  """A local copy of the remote prepared corpus `remote`, downloaded once per host."""
  manifest = read_manifest(remote)
  local = local_cache_dir(remote)
  if not files.isfile(os.path.join(local, MANIFEST)):
    t0 = time.time()
    copy_corpus(manifest, remote, local)
    progress(f'{remote}: copied to {local} in {time.time() - t0:.1f} s')
  return local


class PreparedCorpus:
  """Opens a prepared directory: reads the manifest and maps the shards, O(1) in the corpus
  (a remote directory is first copied to this host's cache, see `fetch`)."""

  def __init__(self, path: str, progress=print):
    self.path = path
    self.manifest = read_manifest(path)
    self._dir = fetch(path, progress) if files.is_remote(path) else path
    self.max_seq_length = self.manifest['max_seq_length']
    self.vocab_file = os.path.join(self._dir, 'vocab.txt')
    self.train = self._split('train')
    self.valid = self._split('valid')

  def _split(self, name) -> Windows:
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
    return Windows(shards, np.asarray(starts, np.int64))
