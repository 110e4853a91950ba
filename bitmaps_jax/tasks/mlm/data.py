"""MLM corpora: documents (text files, TFDS, the built-in corpus) -> WordPiece ids -> packed
windows. `batches` turns windows into masked batches; `prepared` stores windows on disk.
"""

import collections
import zlib
from typing import List, Optional, Sequence

import numpy as np

from bitmaps_jax import files
from bitmaps_jax.errors import UserError

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


# --------------------------------------------------------------------------- corpora


def read_text_documents(path: str, text_format: str) -> List[str]:
  """Documents of a text file.

  'wikitext': articles start at ' = Title = ' headings (sub-headings ' = = x = = ' do not
  split); 'lines': one document per non-empty line.
  """
  if not files.isfile(path):
    raise UserError(f'{path}: corpus file not found')
  try:
    lines = files.read_bytes(path).decode('utf-8').splitlines()
  except UnicodeDecodeError as e:
    raise UserError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from None
  if text_format == 'lines':
    docs = [ln.strip() for ln in lines if ln.strip()]
  elif text_format == 'wikitext':
    docs, current = [], []
    for ln in lines:
      s = ln.strip()
      if s.startswith('= ') and s.endswith(' =') and not s.startswith('= ='):
        if current:
          docs.append(' '.join(current))
        current = [s.strip('= ').strip()]
      elif s:
        current.append(s)
    if current:
      docs.append(' '.join(current))
  else:
    raise UserError(f'data.text_format: unknown format {text_format!r} (wikitext or lines)')
  if not docs:
    raise UserError(f'{path}: corpus is empty')
  return docs


def read_tfds_documents(name: str, split: str, data_dir: Optional[str] = None,
                        max_documents: int = 0) -> List[str]:
  """The 'text' field of a TFDS dataset such as wikipedia/20230601.en."""
  import tensorflow_datasets as tfds
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir or None, shuffle_files=False)
  except Exception as e:  # TFDS raises many types for a missing or unbuilt dataset
    raise UserError(f'tfds {name}[{split}]: cannot load ({type(e).__name__}: {e})') from None
  if max_documents:
    ds = ds.take(max_documents)
  docs = [ex['text'].decode('utf-8') for ex in tfds.as_numpy(ds)]
  if not docs:
    raise UserError(f'tfds {name}[{split}]: no documents')
  return docs


_SUBJECTS = [('the cat', 's'), ('the dog', 's'), ('a child', 's'), ('my teacher', 's'),
             ('the farmer', 's'), ('a bird', 's'), ('the cats', 'p'), ('the dogs', 'p'),
             ('the children', 'p'), ('our teachers', 'p'), ('the farmers', 'p'),
             ('two birds', 'p')]
_VERBS = [('sees', 'see'), ('likes', 'like'), ('finds', 'find'), ('watches', 'watch'),
          ('follows', 'follow'), ('feeds', 'feed')]
_OBJECTS = ['the ball', 'a red apple', 'the old house', 'the river', 'a small garden',
            'the green field', 'the morning sun', 'a quiet village', 'the tall tree']
_PLACES = ['in the park', 'near the river', 'at home', 'in the village', 'by the sea',
           'under the tree']
_TIMES = ['every day', 'in the morning', 'at night', 'in winter', 'after school']


def builtin_documents(num_documents: int, seed: int = 0) -> List[str]:
  """A small synthetic English corpus with subject-verb agreement, generated offline.

  Small enough to train on in minutes, structured enough that MLM loss falls well below
  the unigram entropy (agreement, fixed phrases, word order).
  """
  rng = np.random.default_rng(seed)
  docs = []
  for _ in range(num_documents):
    sentences = []
    for _ in range(int(rng.integers(3, 7))):
      subject, number = _SUBJECTS[rng.integers(len(_SUBJECTS))]
      verb = _VERBS[rng.integers(len(_VERBS))][0 if number == 's' else 1]
      parts = [subject, verb, _OBJECTS[rng.integers(len(_OBJECTS))]]
      if rng.random() < 0.5:
        parts.append(_PLACES[rng.integers(len(_PLACES))])
      if rng.random() < 0.3:
        parts.append(_TIMES[rng.integers(len(_TIMES))])
      sentences.append(' '.join(parts) + ' .')
    docs.append(' '.join(sentences))
  return docs


def split_validation(docs: Sequence[str], fraction: float):
  """Deterministic held-out split by a hash of each document (stable across runs and hosts)."""
  if not 0 < fraction < 1:
    raise UserError(f'data.validation_fraction must be in (0, 1), got {fraction}')
  bucket = [zlib.crc32(d.encode('utf-8')) % 10000 < fraction * 10000 for d in docs]
  train = [d for d, v in zip(docs, bucket) if not v]
  valid = [d for d, v in zip(docs, bucket) if v]
  if not train or not valid:
    raise UserError(f'corpus of {len(docs)} documents is too small for a validation split')
  return train, valid


# --------------------------------------------------------------------------- tokenizer


def train_wordpiece_vocab(docs: Sequence[str], vocab_size: int, path: str) -> str:
  """Writes a WordPiece vocab.txt for `docs`: specials, every character (alone and as a
  '##' continuation, so nothing is [UNK]), then the most frequent words.

  Deterministic (ties broken alphabetically), so every host and every rerun agrees.
  """
  from tokenizers import normalizers, pre_tokenizers
  normalize = normalizers.BertNormalizer(lowercase=True).normalize_str
  split = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
  counts = collections.Counter(w for d in docs for w, _ in split(normalize(d)))
  chars = sorted({c for w in counts for c in w})
  vocab = list(SPECIAL_TOKENS) + chars + ['##' + c for c in chars]
  words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
  vocab += words[:max(vocab_size - len(vocab), 0)]
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(vocab) + '\n')
  return path


# --------------------------------------------------------------------------- packing


def pack_windows(docs: Sequence[str], tokenizer, max_seq_length: int) -> np.ndarray:
  """Concatenates tokenized documents ([SEP] between them) and cuts [CLS] x [SEP] windows.

  Returns int32 (num_windows, max_seq_length); the incomplete tail is dropped.
  """
  if max_seq_length < 8:
    raise UserError(f'max_seq_length must be at least 8, got {max_seq_length}')
  body = max_seq_length - 2
  ids = tokenizer(list(docs), add_special_tokens=False)['input_ids']
  stream = []
  for doc in ids:
    if doc:
      stream.extend(doc)
      stream.append(tokenizer.sep_token_id)
  n = len(stream) // body
  if n == 0:
    raise UserError(f'corpus has {len(stream)} tokens, fewer than one window of {body}')
  windows = np.asarray(stream[:n * body], np.int32).reshape(n, body)
  cls = np.full((n, 1), tokenizer.cls_token_id, np.int32)
  sep = np.full((n, 1), tokenizer.sep_token_id, np.int32)
  return np.concatenate([cls, windows, sep], axis=1)
