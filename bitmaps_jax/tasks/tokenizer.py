"""The WordPiece tokenizer of a run: where it comes from and how it is loaded."""

import os

from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.train.rundir import VOCAB


def tokenizer_source(config):
  """vocab file or directory holding the tokenizer, or None when none is configured."""
  if config.get('tokenizer'):
    return config.tokenizer
  path = config.get('init_checkpoint') or ''
  if path and (files.isfile(files.join(path, VOCAB)) or
               files.isfile(files.join(path, 'tokenizer.json'))):
    return path
  return None


def load_tokenizer(source: str):
  """A fast BERT WordPiece tokenizer from an HF directory or a vocab.txt file (local or
  remote)."""
  if files.is_remote(source):
    if not files.exists(source):
      raise UserError(f'{source}: tokenizer vocab file not found')
    with files.local_copy(source) as local:
      return _load_local_tokenizer(local)
  return _load_local_tokenizer(source)


def _load_local_tokenizer(source: str):
  from transformers import BertTokenizer  # backed by the Rust `tokenizers` WordPiece
  if os.path.isdir(source):
    vocab = os.path.join(source, VOCAB)
    if not os.path.isfile(vocab) and not os.path.isfile(os.path.join(source, 'tokenizer.json')):
      raise UserError(f'{source}: no vocab.txt or tokenizer.json for the tokenizer')
    try:
      return BertTokenizer.from_pretrained(source)
    except Exception as e:
      raise UserError(f'{source}: cannot load tokenizer ({type(e).__name__}: {e})') from None
  if not os.path.isfile(source):
    raise UserError(f'{source}: tokenizer vocab file not found')
  return BertTokenizer(vocab=source, do_lower_case=True)


def vocab_identity(tok) -> dict:
  """{'size', 'tokens_sha256'}: the vocabulary's size and a hash of its tokens in id order,
  so two vocabularies of the same size but other tokens tell apart."""
  import hashlib
  vocab = tok.get_vocab()
  tokens = sorted(vocab, key=vocab.get)
  return {'size': len(tokens),
          'tokens_sha256': hashlib.sha256('\n'.join(tokens).encode('utf-8')).hexdigest()}


def describe_vocab(identity: dict) -> str:
  return f'{identity["size"]} tokens, sha256 {identity["tokens_sha256"][:12]}'


def load_tokenizer_for_packing(source: str):
  """`load_tokenizer`, without the length warning: whole documents are tokenized, then cut."""
  tok = load_tokenizer(source)
  tok.model_max_length = 1 << 40
  return tok
