"""Model shapes, parameter counts per binarization variant, dtypes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitmaps_jax.model import bert
from bitmaps_jax.model import binary_params

VARIANT_EXTRA = {'none': lambda v, h: 0, 'scalar': lambda v, h: 2,
                 'per_dim': lambda v, h: 2 * h, 'per_token': lambda v, h: 2 * v,
                 'rank1': lambda v, h: v + h}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('variant', list(VARIANT_EXTRA))
def test_parameter_counts_per_variant(variant):
  base = bert.sized_config('tiny', architecture='BertForMaskedLM')
  float_params = bert.param_shapes(base)
  cfg = base.replace(binarize=dict(layers=True, embeddings=variant))
  params = bert.param_shapes(cfg)
  v, h = cfg.vocab_size, cfg.hidden_size
  layer_scales = 2 * 6 * cfg.num_hidden_layers  # alpha and gamma for 6 dense layers per layer
  assert _count(params) - _count(float_params) == layer_scales + VARIANT_EXTRA[variant](v, h)
  emb = params['bert']['embeddings']['word_embeddings']
  assert emb['embedding'].shape == (v, h)
  if variant in ('scalar', 'per_dim', 'per_token'):
    expect = {'scalar': (), 'per_dim': (h,), 'per_token': (v,)}[variant]
    assert emb['alpha'].shape == emb['gamma'].shape == expect
  if variant == 'rank1':
    assert emb['u'].shape == (v,) and emb['v'].shape == (h,)


def test_per_channel_scales_have_output_shape():
  cfg = bert.sized_config('tiny', binarize=dict(layers=True, granularity='per_channel'))
  p = bert.param_shapes(cfg)['encoder']['layer_0']['intermediate']['dense']
  assert p['alpha'].shape == p['gamma'].shape == (cfg.intermediate_size,)


@pytest.mark.parametrize('architecture', bert.ARCHITECTURES)
def test_output_shapes(architecture):
  cfg = bert.sized_config('tiny', architecture=architecture, num_labels=3,
                            binarize=dict(layers=True, embeddings='per_dim'))
  params = bert.init_params(cfg, jax.random.PRNGKey(0))
  ids = jnp.ones((2, 9), jnp.int32)
  out = bert.build_model(cfg).apply({'params': params}, ids)
  if architecture == 'BertModel':
    assert out.last_hidden_state.shape == (2, 9, cfg.hidden_size)
    assert out.pooled_output.shape == (2, cfg.hidden_size)
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1
  elif architecture == 'BertForMaskedLM':
    assert out.shape == (2, 9, cfg.vocab_size)
    assert 'pooler' not in params['bert']
  else:
    assert out.shape == (2, 3)


def test_bf16_compute_close_to_float32():
  cfg = bert.sized_config('tiny', architecture='BertForMaskedLM',
                            binarize=dict(layers=True, embeddings='per_dim'))
  params = bert.init_params(cfg, jax.random.PRNGKey(0))
  ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 16)))
  f32 = bert.build_model(cfg).apply({'params': params}, ids)
  bf16_model = bert.build_model(cfg.replace(dtype='bfloat16'))
  bf16 = bf16_model.apply({'params': params}, ids)
  assert bf16.dtype == jnp.bfloat16
  assert jax.tree_util.tree_leaves(params)[0].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(bf16, np.float32), f32, atol=0.1, rtol=0.05)
  # Gradients flow in bf16 too, and land on the float32 latent weights.
  loss = lambda p: jnp.mean(bf16_model.apply({'params': p}, ids).astype(jnp.float32) ** 2)
  grads = jax.grad(loss)(params)
  g = grads['bert']['encoder']['layer_0']['attention']['self']['query']
  assert g['kernel'].dtype == jnp.float32 and np.isfinite(g['kernel']).all()
  assert float(jnp.abs(g['alpha'])) > 0


def test_model_size_names():
  assert bert.sized_config('bert-large').hidden_size == 1024
  assert bert.sized_config('minilm-l6-h384').num_hidden_layers == 6


def test_layout_lists_exactly_the_binary_weights():
  cfg = bert.sized_config('tiny', architecture='BertForSequenceClassification',
                            binarize=dict(layers=True, embeddings='rank1'))
  layout = binary_params.layout(cfg)
  kernels = [p for p in layout if p[-1] == 'kernel']
  assert len(kernels) == 6 * cfg.num_hidden_layers
  assert all('encoder' in p for p in kernels)  # pooler and classifier stay float
  assert ('bert', 'embeddings', 'word_embeddings', 'embedding') in layout
  assert binary_params.layout(cfg.replace(binarize=dict(layers=False))) == {}


def test_sign_flip_fraction_counts_changed_signs():
  cfg = bert.sized_config('tiny', binarize=dict(layers=True))
  params = bert.init_params(cfg, jax.random.PRNGKey(0))
  assert float(binary_params.sign_flip_fraction(cfg, params, params)) == 0.0
  kernel = params['encoder']['layer_0']['attention']['self']['query']['kernel']
  moved = jax.tree_util.tree_map(lambda x: x, params)
  flipped = kernel.at[0, :3].multiply(-1.0)  # 3 signs flipped (no weight is exactly 0)
  moved['encoder']['layer_0']['attention']['self']['query']['kernel'] = flipped
  total = sum(params_at(params, p).size for p in binary_params.layout(cfg))
  assert float(binary_params.sign_flip_fraction(cfg, moved, params)) == pytest.approx(3 / total)


def params_at(params, path):
  for k in path:
    params = params[k]
  return params


def test_ternary_model_dequantizes_to_the_float_model_it_computes():
  """A ternary run serves as a distillation teacher through its dequantized float form."""
  cfg = bert.sized_config('tiny', architecture='BertForSequenceClassification',
                            binarize=dict(layers=True, granularity='ternary'))
  params = binary_params.add_scales(cfg, bert.init_params(cfg, jax.random.PRNGKey(0)))
  ids = jnp.array([[2, 5, 7, 9, 3, 0]])
  mask = (ids > 0).astype(jnp.int32)
  run = lambda c, p: bert.build_model(c).apply({'params': p}, ids, mask, jnp.zeros_like(ids),
                                                  deterministic=True)[0]
  float_cfg, float_params = binary_params.dequantize(cfg, params)
  assert not float_cfg.binarize.any
  kernel = float_params['bert']['encoder']['layer_0']['intermediate']['dense']['kernel']
  assert len(np.unique(np.abs(np.asarray(kernel[:, 0])))) == 2  # 0 and its column's alpha
  np.testing.assert_allclose(run(float_cfg, float_params), run(cfg, params), rtol=1e-5,
                             atol=1e-5)


def _binary_model(granularity='per_channel', embeddings='none', layers=True, seed=0):
  cfg = bert.sized_config('tiny', architecture='BertForSequenceClassification',
                            binarize=dict(layers=layers, granularity=granularity,
                                          embeddings=embeddings))
  return cfg, binary_params.add_scales(cfg, bert.init_params(cfg, jax.random.PRNGKey(seed)))


@pytest.mark.parametrize('source,target', [('per_channel', 'per_tensor'),
                                           ('per_tensor', 'per_channel'),
                                           ('per_channel', 'rank1'), ('rank1', 'per_channel'),
                                           ('per_channel', 'statistics'),
                                           ('per_channel', 'ternary')])
def test_a_checkpoint_of_another_dense_scheme_gets_this_schemes_fitted_scales(source, target):
  """Starting a run of one scheme from another's checkpoint keeps the latent weights and
  carries no scale of the old scheme (dead, or misshapen like a per-channel alpha under
  per_tensor)."""
  source_cfg, params = _binary_model(source)
  cfg, fresh = _binary_model(target)  # the same latent weights (same key), scales fitted
  converted_cfg, converted = binary_params.convert(source_cfg, params, cfg.binarize)
  assert converted_cfg == cfg
  converted = binary_params.add_scales(cfg, converted)
  assert (jax.tree_util.tree_structure(converted) == jax.tree_util.tree_structure(fresh))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(converted),
                          jax.tree_util.tree_leaves(fresh)):
    np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_a_checkpoint_of_the_same_scheme_keeps_its_trained_scales():
  cfg, params = _binary_model('per_channel', embeddings='per_dim')
  trained = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 3.0 if jax.tree_util.keystr(p).endswith("['alpha']") else x, params)
  _, kept = binary_params.convert(cfg, trained, dataclasses.replace(cfg.binarize, clip=None))
  for a, b in zip(jax.tree_util.tree_leaves(kept), jax.tree_util.tree_leaves(trained)):
    np.testing.assert_array_equal(a, b)


def test_binary_weights_a_run_keeps_float_start_from_what_they_stood_for():
  """Binary layers -> float layers with binary embeddings: the kernels become alpha B + gamma,
  their scales go, and the result is a valid model of the new setting."""
  cfg, params = _binary_model('per_channel')
  keep = dataclasses.replace(cfg.binarize, layers=False, embeddings='per_dim')
  out_cfg, out = binary_params.convert(cfg, params, keep)
  assert out_cfg.binarize == keep
  dense = params['bert']['encoder']['layer_0']['intermediate']['dense']
  scheme = cfg.binarize.dense_scheme
  expect = scheme.dequantize(dense['kernel'], {n: dense[n] for n in scheme.scale_names})
  got = out['bert']['encoder']['layer_0']['intermediate']['dense']
  assert set(got) == {'kernel', 'bias'}
  np.testing.assert_allclose(got['kernel'], expect, rtol=1e-6)
  _, fresh = _binary_model(layers=False, embeddings='per_dim')
  assert (jax.tree_util.tree_structure(binary_params.add_scales(out_cfg, out))
          == jax.tree_util.tree_structure(fresh))
