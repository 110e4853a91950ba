"""Converter: our BertModel on real MiniLM weights matches transformers' PyTorch BertModel."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitmaps_jax import BinarizeConfig
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert
from bitmaps_jax.model import hf as convert


def _torch():
  """torch and transformers, for the tests that compare against PyTorch (skipped without)."""
  return pytest.importorskip('torch'), pytest.importorskip('transformers')


def _padded_batch(vocab_size):
  rng = np.random.default_rng(0)
  ids = rng.integers(1000, vocab_size, size=(3, 12)).astype(np.int64)
  mask = np.ones_like(ids)
  mask[1, 7:] = 0
  mask[2, 4:] = 0
  ids[mask == 0] = 0
  types = np.zeros_like(ids)
  types[:, 6:] = 1
  types[mask == 0] = 0
  return ids, mask, types


def test_minilm_matches_pytorch(minilm_dir):
  torch, transformers = _torch()
  config, params = convert.load_hf_bert(minilm_dir)
  assert config.architecture == 'BertModel' and config.hidden_size == 384
  ids, mask, types = _padded_batch(config.vocab_size)
  ours = bert.BertModel(config).apply({'params': params}, jnp.asarray(ids),
                                        attention_mask=jnp.asarray(mask),
                                        token_type_ids=jnp.asarray(types), deterministic=True)
  ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
  with torch.no_grad():
    out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
              token_type_ids=torch.tensor(types))
  valid = mask.astype(bool)
  diff_h = np.abs(np.asarray(ours.last_hidden_state) - out.last_hidden_state.numpy())[valid].max()
  diff_p = np.abs(np.asarray(ours.pooled_output) - out.pooler_output.numpy()).max()
  print(f'max |diff| last hidden {diff_h:.2e}, pooled {diff_p:.2e}')
  assert diff_h <= 1e-4 and diff_p <= 1e-4


@pytest.mark.parametrize('architecture', ['BertForMaskedLM', 'BertForSequenceClassification'])
@pytest.mark.parametrize('embeddings', ['none', 'per_dim', 'rank1'])
def test_hf_round_trip_binary(tmp_path, architecture, embeddings):
  torch, transformers = _torch()
  config = bert.sized_config('tiny', architecture=architecture,
                               binarize=dict(layers=True, embeddings=embeddings))
  params = bert.init_params(config, jax.random.PRNGKey(1))
  convert.save_hf_bert(config, params, str(tmp_path))
  ids = np.random.default_rng(0).integers(1, config.vocab_size, size=(2, 10))
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  ours = bert.build_model(config).apply({'params': params}, jnp.asarray(ids),
                                          attention_mask=jnp.asarray(mask))
  ref = getattr(transformers, architecture).from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    theirs = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
  diff = np.abs(np.asarray(ours) - theirs)
  if architecture == 'BertForMaskedLM':
    diff = diff[mask.astype(bool)]
  assert diff.max() <= 1e-4
  # And back: loading the exported directory gives the same logits as the binarized model.
  config2, params2 = convert.load_hf_bert(str(tmp_path))
  assert config2.architecture == architecture
  back = bert.build_model(config2).apply({'params': params2}, jnp.asarray(ids),
                                           attention_mask=jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(back), np.asarray(ours), atol=1e-4)


def test_binarized_load_initialises_scales(minilm_dir):
  cfg = BinarizeConfig(layers=True, embeddings='per_dim')
  config, params = convert.load_hf_bert(minilm_dir, cfg)
  q = params['encoder']['layer_0']['attention']['self']['query']
  np.testing.assert_allclose(q['alpha'], np.abs(q['kernel']).mean(), rtol=1e-5)
  np.testing.assert_allclose(q['gamma'], q['kernel'].mean(), rtol=1e-4, atol=1e-7)
  emb = params['embeddings']['word_embeddings']
  assert emb['alpha'].shape == (config.hidden_size,)
  out = bert.BertModel(config).apply({'params': params}, jnp.ones((1, 5), jnp.int32))
  assert np.isfinite(np.asarray(out.last_hidden_state)).all()


def test_bad_directories(tmp_path, minilm_dir):
  with pytest.raises(UserError, match='not a directory'):
    convert.load_hf_bert(str(tmp_path / 'nope'))
  with pytest.raises(UserError, match='config.json: missing'):
    convert.load_hf_bert(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'gpt2'}))
  with pytest.raises(UserError, match="model_type 'gpt2' is not BERT"):
    convert.load_hf_bert(str(tmp_path))
  hf = json.load(open(os.path.join(minilm_dir, 'config.json')))
  (tmp_path / 'config.json').write_text(json.dumps(hf))
  with pytest.raises(UserError, match='no weights found'):
    convert.load_hf_bert(str(tmp_path))
  (tmp_path / 'model.safetensors').write_bytes(b'\x00garbage')
  with pytest.raises(UserError, match='cannot read weights'):
    convert.load_hf_bert(str(tmp_path))
  # Weights from another model size: config says 12 layers / 768 hidden.
  os.remove(tmp_path / 'model.safetensors')
  os.symlink(os.path.join(minilm_dir, 'model.safetensors'), tmp_path / 'model.safetensors')
  (tmp_path / 'config.json').write_text(json.dumps(dict(hf, hidden_size=768)))
  with pytest.raises(UserError, match='has shape'):
    convert.load_hf_bert(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps(dict(hf, num_hidden_layers=8)))
  with pytest.raises(UserError, match='missing weights'):
    convert.load_hf_bert(str(tmp_path))


@pytest.mark.parametrize('architecture', ['BertForMaskedLM', 'BertForSequenceClassification'])
def test_adapt_params_keeps_the_encoder_and_adds_the_head(minilm_dir, architecture):
  config, params = convert.load_hf_bert(minilm_dir)
  new_cfg, new = bert.adapt_params(config, params, architecture, jax.random.PRNGKey(0),
                                      num_labels=3)
  expected = bert.param_shapes(new_cfg)
  assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(expected)
  np.testing.assert_array_equal(new['bert']['encoder']['layer_5']['output']['dense']['kernel'],
                                params['encoder']['layer_5']['output']['dense']['kernel'])
  if architecture == 'BertForSequenceClassification':
    assert new['classifier']['kernel'].shape == (config.hidden_size, 3)
