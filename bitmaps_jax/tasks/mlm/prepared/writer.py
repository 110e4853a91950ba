"""Preparing an MLM corpus once: documents tokenized with every core, packed into windows,
written as shards (`reader` documents the layout); resumable, and refusing to mix settings."""

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from typing import Optional, Sequence

import numpy as np

from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.tasks import tokenizer as tokenizers
from bitmaps_jax.tasks.mlm import data as mlm_data
from bitmaps_jax.tasks.mlm.prepared.reader import (MANIFEST, PROGRESS, FORMAT, copy_corpus,
                                                   local_cache_dir, read_manifest, write_json)


def _tokenize_chunk(args):
  docs, vocab, max_seq_length = args
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
  signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Stop(BaseException):
  pass


@contextlib.contextmanager
def _signals_stop(error):
  """SIGTERM / SIGINT end the preparation between shards: the workers are ended (leaving the
  Pool's context) and `error(signal name)` is raised; the shards written so far stay, and a
  re-run resumes after them."""
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
  os.makedirs(out_dir, exist_ok=True)
  manifest_path = os.path.join(out_dir, MANIFEST)
  vocab_bytes, settings = _settings(documents, vocab, max_seq_length, docs_per_shard,
                                    validation_documents)
  if os.path.isfile(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
    return _already_prepared(out_dir, manifest, settings, progress)
  vocab_sha = settings['vocab_sha256']
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
      write_json(progress_path, done)
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
  write_json(manifest_path, manifest)
  return manifest


def _prepare_remote(documents, vocab, out_dir: str, progress, **settings) -> dict:
  """`prepare` into this host's cache for `out_dir`, then uploads it, manifest last (so a
  training host on this machine finds it without downloading)."""
  if files.isfile(files.join(out_dir, MANIFEST)):
    _, wanted = _settings(documents, vocab, **{k: settings[k] for k in (
        'max_seq_length', 'docs_per_shard', 'validation_documents')})
    return _already_prepared(out_dir, read_manifest(out_dir), wanted, progress)
  local = local_cache_dir(out_dir)
  manifest = prepare(documents, vocab, local, progress=progress, **settings)
  t0 = time.time()
  copy_corpus(manifest, local, out_dir)
  progress(f'{out_dir}: uploaded in {time.time() - t0:.1f} s')
  return manifest
