"""Hugging Face BERT <-> bitmaps-jax parameters.

`load_hf_bert` reads a transformers BERT directory (config.json + model.safetensors or
pytorch_model.bin) into (BertConfig, params); `save_hf_bert` writes params back as a directory
that `transformers` loads, binary weights dequantized to alpha * B + gamma.
"""

import contextlib
import json
import os
import re
import tempfile
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bitmaps_jax.binary.schemes import BinarizeConfig
from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert
from bitmaps_jax.model import binary_params
from bitmaps_jax.model.bert import BertConfig

CONFIG_FILE = 'config.json'
WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
_HF_CONFIG_FIELDS = ('vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
                     'intermediate_size', 'hidden_act', 'hidden_dropout_prob',
                     'attention_probs_dropout_prob', 'max_position_embeddings',
                     'type_vocab_size', 'layer_norm_eps', 'pad_token_id')
# Keys in HF checkpoints that have no counterpart here (buffers, tied copies, NSP head).
_IGNORED = re.compile(r'(position_ids$|cls\.predictions\.decoder\.|cls\.seq_relationship\.)')


# --------------------------------------------------------------------------- config


def read_hf_config(path: str, **overrides) -> BertConfig:
  """BertConfig from `path/config.json`; `overrides` replace fields (e.g. binarize=...)."""
  file = os.path.join(path, CONFIG_FILE)
  if not os.path.isdir(path):
    raise UserError(f'{path}: not a directory (expected a Hugging Face BERT directory)')
  if not os.path.isfile(file):
    raise UserError(f'{file}: missing (expected a Hugging Face BERT config)')
  try:
    with open(file) as f:
      hf = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f'{file}: not valid JSON ({e})') from None
  if not isinstance(hf, dict) or hf.get('model_type', 'bert') != 'bert':
    kind = hf.get('model_type') if isinstance(hf, dict) else type(hf).__name__
    raise UserError(f'{file}: model_type {kind!r} is not BERT')
  missing = [k for k in ('vocab_size', 'hidden_size', 'num_hidden_layers',
                         'num_attention_heads', 'intermediate_size') if k not in hf]
  if missing:
    raise UserError(f'{file}: missing BERT fields {", ".join(missing)}')
  fields = {k: hf[k] for k in _HF_CONFIG_FIELDS if k in hf and hf[k] is not None}
  archs = [a for a in hf.get('architectures') or [] if a in bert.ARCHITECTURES]
  if archs:
    fields['architecture'] = archs[0]
  if 'id2label' in hf:
    fields['num_labels'] = len(hf['id2label'])
  fields.update(overrides)
  try:
    return BertConfig(**fields)
  except TypeError as e:
    raise UserError(f'{file}: {e}') from None


def hf_config_dict(config: BertConfig) -> dict:
  out = {k: getattr(config, k) for k in _HF_CONFIG_FIELDS}
  out.update(model_type='bert', architectures=[config.architecture],
             position_embedding_type='absolute', tie_word_embeddings=True)
  if config.architecture == 'BertForSequenceClassification':
    out['id2label'] = {str(i): f'LABEL_{i}' for i in range(config.num_labels)}
    out['label2id'] = {f'LABEL_{i}': i for i in range(config.num_labels)}
  return out


# --------------------------------------------------------------------------- names


def hf_to_path(name: str):
  """'encoder.layer.0.attention.self.query.weight' -> (path tuple, transpose?)."""
  name = re.sub(r'\.layer\.(\d+)\.', r'.layer_\1.', name)
  parts = name.split('.')
  parent, leaf = parts[-2] if len(parts) > 1 else '', parts[-1]
  transpose = False
  if parent.endswith('LayerNorm'):
    leaf = {'weight': 'scale', 'gamma': 'scale', 'beta': 'bias'}.get(leaf, leaf)
  elif parent.endswith('_embeddings') and leaf == 'weight':
    leaf = 'embedding'
  elif leaf == 'weight':
    leaf, transpose = 'kernel', True
  return tuple(parts[:-1]) + (leaf,), transpose


def path_to_hf(path) -> tuple:
  """Inverse of `hf_to_path`: (HF name, transpose?)."""
  parts = [re.sub(r'^layer_(\d+)$', r'layer.\1', p) for p in path]
  leaf = parts[-1]
  transpose = leaf == 'kernel'
  parts[-1] = {'kernel': 'weight', 'scale': 'weight', 'embedding': 'weight'}.get(leaf, leaf)
  return '.'.join(parts), transpose


# --------------------------------------------------------------------------- weights


def read_state_dict(path: str) -> tuple:
  """(file, {name: float32 numpy array}) from the directory's safetensors or .bin file."""
  for fname in WEIGHT_FILES:
    file = os.path.join(path, fname)
    if os.path.isfile(file):
      break
  else:
    raise UserError(f'{path}: no weights found (expected {" or ".join(WEIGHT_FILES)})')
  try:
    if file.endswith('.safetensors'):
      from safetensors.numpy import load_file
      state = load_file(file)
    else:
      try:
        import torch
      except ImportError:
        raise UserError(f'{file}: reading pytorch_model.bin needs torch installed') from None
      raw = torch.load(file, map_location='cpu', weights_only=True)
      state = {k: v.float().numpy() for k, v in raw.items()}
  except UserError:
    raise
  except Exception as e:  # each reader raises its own types for a damaged file
    raise UserError(f'{file}: cannot read weights ({type(e).__name__}: {e})') from None
  return file, {k: np.asarray(v, np.float32) for k, v in state.items()}


def _strip_prefix(state, architecture):
  """BertModel checkpoints are sometimes saved with a 'bert.' prefix; the heads always have it."""
  if architecture == 'BertModel':
    return {k[len('bert.'):] if k.startswith('bert.') else k: v for k, v in state.items()}
  return {k if k.startswith(('bert.', 'cls.', 'classifier.')) else 'bert.' + k: v
          for k, v in state.items()}


def _infer_architecture(state):
  if any(k.startswith('classifier.') for k in state):
    return 'BertForSequenceClassification'
  if any(k.startswith('cls.predictions.') for k in state):
    return 'BertForMaskedLM'
  return 'BertModel'


def load_hf_bert(path: str, binarize_cfg: Optional[BinarizeConfig] = None,
                 architecture: Optional[str] = None, **overrides):
  """Reads a Hugging Face BERT directory into (config, params).

  `params` is the parameter tree of `bert.build_model(config)`. When `binarize_cfg` turns
  binarization on, alpha/gamma (or u/v) are initialised from the loaded weights.
  """
  if binarize_cfg is not None:
    overrides['binarize'] = binarize_cfg
  config = read_hf_config(path, **overrides)
  file, state = read_state_dict(path)
  if architecture is None and 'architecture' not in overrides:
    architecture = _infer_architecture(state)
    if architecture == 'BertForMaskedLM' and config.architecture == 'BertModel':
      architecture = 'BertModel'
  config = config.replace(architecture=architecture or config.architecture)
  state = _strip_prefix(state, config.architecture)
  float_config = config.replace(binarize=BinarizeConfig())
  expected = traverse_util.flatten_dict(bert.param_shapes(float_config))
  flat = {}
  for name, value in state.items():
    if _IGNORED.search(name):
      continue
    key, transpose = hf_to_path(name)
    if key not in expected:
      if config.architecture == 'BertModel' and key[0] in ('cls', 'classifier'):
        continue
      raise UserError(f'{file}: unexpected weight {name!r} for a {config.architecture}')
    value = value.T if transpose else value
    if value.shape != expected[key].shape:
      raise UserError(f'{file}: weight {name!r} has shape {value.shape}, but config.json '
                      f'implies {expected[key].shape}')
    flat[key] = jnp.asarray(value, config.storage_dtype)
  missing = [path_to_hf(k)[0] for k in expected if k not in flat]
  if missing:
    if config.architecture != 'BertModel' and missing == ['bert.pooler.dense.weight',
                                                           'bert.pooler.dense.bias']:
      # MLM checkpoints often ship without a pooler; start it from random weights.
      rand = traverse_util.flatten_dict(bert.init_params(float_config, jax.random.PRNGKey(0)))
      flat.update({k: rand[k] for k in expected if k not in flat})
    else:
      raise UserError(f'{file}: missing weights {", ".join(missing[:4])}'
                      f'{" ..." if len(missing) > 4 else ""}')
  params = traverse_util.unflatten_dict(flat)
  return config, binary_params.add_scales(config, params)


def save_hf_bert(config: BertConfig, params, out_dir: str, tokenizer: Optional[str] = None):
  """Writes config.json + model.safetensors that transformers' BERT classes load, and, given
  `tokenizer` (a vocab.txt or a directory with one), the tokenizer files for AutoTokenizer.
  A remote `out_dir` is written locally first, then copied up file by file."""
  with files.local_copy(tokenizer) if tokenizer else contextlib.nullcontext() as local_tok:
    if not files.is_remote(out_dir):
      return _save_hf_bert_local(config, params, out_dir, local_tok)
    with tempfile.TemporaryDirectory() as staging:
      _save_hf_bert_local(config, params, staging, local_tok)
      files.makedirs(out_dir)
      for name in sorted(os.listdir(staging)):
        files.copy(os.path.join(staging, name), files.join(out_dir, name))


def _save_hf_bert_local(config: BertConfig, params, out_dir: str, tokenizer: Optional[str]):
  from safetensors.numpy import save_file
  config, params = binary_params.dequantize(config, params)
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise UserError(f'{out_dir}: cannot create the output directory ({e.strerror})') from None
  state = {}
  for path, w in traverse_util.flatten_dict(params).items():
    name, transpose = path_to_hf(path)
    w = np.asarray(w, np.float32)
    state[name] = np.ascontiguousarray(w.T if transpose else w)
  if config.architecture == 'BertForMaskedLM':
    state['cls.predictions.decoder.bias'] = state['cls.predictions.bias']
  weights = os.path.join(out_dir, 'model.safetensors')
  save_file(state, weights, metadata={'format': 'pt'})
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(weights, 0o666 & ~umask)  # safetensors creates it 0600
  with open(os.path.join(out_dir, CONFIG_FILE), 'w') as f:
    json.dump(hf_config_dict(config), f, indent=2)
  if tokenizer:
    from transformers import BertTokenizer
    vocab = tokenizer if os.path.isfile(tokenizer) else os.path.join(tokenizer, 'vocab.txt')
    if not os.path.isfile(vocab):
      raise UserError(f'{tokenizer}: no vocab.txt to write the tokenizer from')
    BertTokenizer(vocab=vocab, do_lower_case=True,
                  model_max_length=config.max_position_embeddings).save_pretrained(out_dir)
