"""Flax linen BERT with optional binary weights.

Parameter names mirror Hugging Face's (`embeddings/word_embeddings/embedding`,
`encoder/layer_0/attention/self/query/kernel`, ...), so converting is a rename plus transposes.
"""

import dataclasses
from typing import Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from bitmaps_jax.binary.layers import BinaryDense, BinaryEmbed, default_kernel_init
from bitmaps_jax.binary.schemes import BinarizeConfig
from bitmaps_jax.errors import UserError

ARCHITECTURES = ('BertModel', 'BertForMaskedLM', 'BertForSequenceClassification')
DTYPES = ('float32', 'bfloat16', 'float16')


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Model hyper-parameters (Hugging Face field names) plus compute dtypes and binarization."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = 'gelu'
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  num_labels: int = 2
  architecture: str = 'BertModel'
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  binarize: BinarizeConfig = BinarizeConfig()

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise UserError(f'hidden_size {self.hidden_size} is not a multiple of '
                      f'num_attention_heads {self.num_attention_heads}')
    if self.architecture not in ARCHITECTURES:
      raise UserError(f'unknown architecture {self.architecture!r}; expected one of '
                      f'{", ".join(ARCHITECTURES)}')
    for field in ('dtype', 'param_dtype'):
      if getattr(self, field) not in DTYPES:
        raise UserError(f'{field}: {getattr(self, field)!r} is not one of {", ".join(DTYPES)}')
    if self.hidden_act not in _ACTIVATIONS:
      raise UserError(f'hidden_act {self.hidden_act!r} is not supported; '
                      f'expected one of {", ".join(_ACTIVATIONS)}')

  def replace(self, **changes) -> 'BertConfig':
    if 'binarize' in changes:
      changes['binarize'] = BinarizeConfig.from_dict(changes['binarize'])
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> 'BertConfig':
    d = dict(d)
    d['binarize'] = BinarizeConfig.from_dict(d.get('binarize', {}))
    try:
      return cls(**d)
    except TypeError as e:
      raise UserError(f'model config: {e}') from None

  @property
  def compute_dtype(self):
    """`dtype` (a name, as configs and files hold it) as the dtype activations use."""
    return jnp.dtype(self.dtype)

  @property
  def storage_dtype(self):
    """`param_dtype` as the dtype parameters are stored in."""
    return jnp.dtype(self.param_dtype)


_ACTIVATIONS = {
    'gelu': lambda x: nn.gelu(x, approximate=False),
    'gelu_new': lambda x: nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: nn.gelu(x, approximate=True),
    'relu': nn.relu,
}

MODEL_SIZES = {
    'bert-base': BertConfig(),
    'bert-large': BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096),
    'minilm-l6-h384': BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                 intermediate_size=1536),
    'mini': BertConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=512, max_position_embeddings=512),
    'tiny': BertConfig(vocab_size=512, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=128),
}


def sized_config(size: str, **overrides) -> BertConfig:
  """A named model size (`MODEL_SIZES`) with field overrides."""
  if size not in MODEL_SIZES:
    raise UserError(f'unknown model size {size!r}; expected one of {", ".join(MODEL_SIZES)}')
  return MODEL_SIZES[size].replace(**overrides)


@flax.struct.dataclass
class BertOutput:
  last_hidden_state: jax.Array
  pooled_output: Optional[jax.Array] = None
  hidden_states: Optional[Tuple[jax.Array, ...]] = None


def _dense(cfg: BertConfig, features, binary=False, name=None):
  """A dense layer; `binary` marks the encoder's six kernels, binarized when config says so."""
  return BinaryDense(features, scheme=cfg.binarize.dense_scheme if binary else None,
                     dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype, name=name)


def _layer_norm(cfg: BertConfig, name='LayerNorm'):
  return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype,
                      param_dtype=cfg.storage_dtype, name=name)


class BertEmbeddings(nn.Module):
  config: BertConfig

  def setup(self):
    cfg = self.config
    self.word_embeddings = BinaryEmbed(
        cfg.vocab_size, cfg.hidden_size, scheme=cfg.binarize.embedding_scheme,
        dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype)
    embed = lambda n: nn.Embed(n, cfg.hidden_size, embedding_init=default_kernel_init,
                               dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype)
    self.position_embeddings = embed(cfg.max_position_embeddings)
    self.token_type_embeddings = embed(cfg.type_vocab_size)
    self.LayerNorm = _layer_norm(cfg)
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, position_ids, deterministic):
    x = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids) +
         self.token_type_embeddings(token_type_ids))
    return self.dropout(self.LayerNorm(x), deterministic=deterministic)


class BertSelfAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask_bias, deterministic):
    cfg = self.config
    heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    split = lambda t: t.reshape(t.shape[:-1] + (heads, head_dim))
    q = split(_dense(cfg, cfg.hidden_size, True, 'query')(x))
    k = split(_dense(cfg, cfg.hidden_size, True, 'key')(x))
    v = split(_dense(cfg, cfg.hidden_size, True, 'value')(x))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    scores = scores.astype(jnp.float32) + mask_bias
    # Kept only when applied with mutable=['intermediates'] (attention distillation).
    self.sow('intermediates', 'attention_logits', scores)
    probs = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)
    probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
    ctx = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
    return ctx.reshape(ctx.shape[:-2] + (cfg.hidden_size,))


class BertResidualOutput(nn.Module):
  """dense -> dropout -> LayerNorm(x + residual): HF's BertSelfOutput and BertOutput."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, residual, deterministic):
    cfg = self.config
    x = _dense(cfg, cfg.hidden_size, True, 'dense')(x)
    x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
    return _layer_norm(cfg)(x + residual)


class BertAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask_bias, deterministic):
    ctx = BertSelfAttention(self.config, name='self')(x, mask_bias, deterministic)
    return BertResidualOutput(self.config, name='output')(ctx, x, deterministic)


class BertIntermediate(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    return _ACTIVATIONS[cfg.hidden_act](_dense(cfg, cfg.intermediate_size, True, 'dense')(x))


class BertLayer(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask_bias, deterministic):
    x = BertAttention(self.config, name='attention')(x, mask_bias, deterministic)
    h = BertIntermediate(self.config, name='intermediate')(x)
    return BertResidualOutput(self.config, name='output')(h, x, deterministic)


class BertEncoder(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask_bias, deterministic):
    states = [x]
    for i in range(self.config.num_hidden_layers):
      x = BertLayer(self.config, name=f'layer_{i}')(x, mask_bias, deterministic)
      states.append(x)
    return tuple(states)


class BertPooler(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x):
    return jnp.tanh(_dense(self.config, self.config.hidden_size, False, 'dense')(x[:, 0]))


class BertModel(nn.Module):
  """BERT encoder. Returns a `BertOutput` (last hidden state, pooled output, all layers)."""
  config: BertConfig
  add_pooling_layer: bool = True

  def setup(self):
    self.embeddings = BertEmbeddings(self.config)
    self.encoder = BertEncoder(self.config)
    if self.add_pooling_layer:
      self.pooler = BertPooler(self.config)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
               deterministic=True):
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    neg = jnp.finfo(jnp.float32).min
    mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, neg).astype(jnp.float32)
    states = self.encoder(x, mask_bias, deterministic)
    pooled = self.pooler(states[-1]) if self.add_pooling_layer else None
    return BertOutput(last_hidden_state=states[-1], pooled_output=pooled, hidden_states=states)

  def decode_word_embeddings(self, h):
    """h @ E_b^T: the tied MLM decoder."""
    return self.embeddings.word_embeddings.decode(h)


class BertLMPredictionHead(nn.Module):
  """transform (dense + act + LayerNorm), then the tied `decoder`, plus an output bias."""
  config: BertConfig

  @nn.compact
  def __call__(self, h, decoder):
    cfg = self.config
    bias = self.param('bias', nn.initializers.zeros, (cfg.vocab_size,), cfg.storage_dtype)
    h = BertPredictionTransform(cfg, name='transform')(h)
    return decoder(h) + bias.astype(h.dtype)


class BertPredictionTransform(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, h):
    cfg = self.config
    h = _ACTIVATIONS[cfg.hidden_act](_dense(cfg, cfg.hidden_size, False, 'dense')(h))
    return _layer_norm(cfg)(h)


class BertOnlyMLMHead(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, h, decoder):
    return BertLMPredictionHead(self.config, name='predictions')(h, decoder)


class BertForMaskedLM(nn.Module):
  """BERT + MLM head whose decoder is tied to the (possibly binary) word embeddings."""
  config: BertConfig

  def setup(self):
    self.bert = BertModel(self.config, add_pooling_layer=False)
    self.cls = BertOnlyMLMHead(self.config)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True,
               output_hidden_states=False, masked_positions=None):
    """Logits (batch, seq, vocab), or (batch, P, vocab) at `masked_positions` (batch, P).

    Scoring only the masked positions skips ~85% of the vocab-sized decoder product.
    """
    out = self.bert(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
    h = out.last_hidden_state
    if masked_positions is not None:
      h = jnp.take_along_axis(h, masked_positions[..., None], axis=1)
    logits = self.cls(h, self.bert.decode_word_embeddings)
    return (logits, out) if output_hidden_states else logits


class BertForSequenceClassification(nn.Module):
  """BERT + pooler + dropout + linear classifier."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True,
               output_hidden_states=False):
    cfg = self.config
    out = BertModel(cfg, name='bert')(input_ids, attention_mask, token_type_ids,
                                      deterministic=deterministic)
    x = nn.Dropout(cfg.hidden_dropout_prob)(out.pooled_output, deterministic=deterministic)
    logits = _dense(cfg, cfg.num_labels, False, 'classifier')(x).astype(jnp.float32)
    return (logits, out) if output_hidden_states else logits


def model_class(architecture: str):
  return {'BertModel': BertModel, 'BertForMaskedLM': BertForMaskedLM,
          'BertForSequenceClassification': BertForSequenceClassification}[architecture]


def build_model(config: BertConfig) -> nn.Module:
  """The Flax module for `config.architecture`."""
  return model_class(config.architecture)(config)


def init_params(config: BertConfig, rng, seq_len: int = 8):
  """Random parameters of `build_model(config)`."""
  ids = jnp.zeros((1, seq_len), jnp.int32)
  return build_model(config).init(rng, ids)['params']


def param_shapes(config: BertConfig):
  """Shapes/dtypes of the parameter tree, without allocating it."""
  return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def adapt_params(config: BertConfig, params, architecture: str, rng, num_labels=None):
  """Moves params to another architecture (e.g. BertModel -> BertForMaskedLM).

  The shared encoder is kept; heads the source lacks are initialised at random (from `rng`),
  heads the target lacks are dropped. Returns (new config, new params).
  """
  target = config.replace(architecture=architecture,
                          num_labels=num_labels if num_labels is not None else config.num_labels)
  if config.architecture == architecture and target.num_labels == config.num_labels:
    return target, params
  src_bert = params if config.architecture == 'BertModel' else params['bert']
  fresh = init_params(target, rng)
  if architecture == 'BertModel':
    return target, dict(fresh, **{k: v for k, v in src_bert.items() if k in fresh})
  bert = dict(fresh['bert'], **{k: v for k, v in src_bert.items() if k in fresh['bert']})
  return target, dict(fresh, bert=bert)
