"""The README's snippets run as written, and the commands and configs it names exist."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, 'README.md')).read()


def _blocks(lang):
  return re.findall(rf'```{lang}\n(.*?)```', README, re.S)


@pytest.mark.parametrize('code', _blocks('python'))
def test_python_blocks_run(code, tmp_path, minilm_dir):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS='')
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                       text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  # The shapes the comments promise are the shapes printed.
  for promised in re.findall(r'print\(.*\)  # (.*)', code):
    assert promised in out.stdout, (promised, out.stdout)
  # The HF export loads in transformers with its tokenizer, next to the model.
  if 'save_hf_bert' in code:
    transformers = pytest.importorskip('transformers')
    pytest.importorskip('torch')
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'minilm-binary'))
    model = transformers.AutoModel.from_pretrained(str(tmp_path / 'minilm-binary'))
    assert tok('hello world')['input_ids'] == [101, 7592, 2088, 102]
    assert model.config.hidden_size == 384
    mode = os.stat(tmp_path / 'minilm-binary' / 'model.safetensors').st_mode & 0o777
    assert mode & 0o044 == 0o044, oct(mode)  # readable by others, as any file the user writes


def test_named_commands_and_configs_exist():
  from bitmaps_jax import __main__ as entry
  commands = set(re.findall(r'python -m bitmaps_jax (\w+)', README))
  assert commands and commands <= set(entry.COMMANDS), commands - set(entry.COMMANDS)
  import importlib
  for command in entry.COMMANDS:  # their flags coexist in one process
    importlib.import_module(f'bitmaps_jax.tools.{command}')
  for path, arg in re.findall(r'(configs/[\w/]+\.py):\{?([\w,]+)', README):
    assert os.path.isfile(os.path.join(REPO, path)), path
    module = __import__(path[:-3].replace('/', '.'), fromlist=['get_config'])
    for a in arg.split(','):
      if a != 'ROW':
        module.get_config(a)  # every argument the README names is accepted
  from configs import default, glue
  for flag in set(re.findall(r'--config\.([\w.]+)=', README)) - {'x'}:
    found = False
    for cfg in (default.get_config(), glue.get_config('cola')):
      node = cfg
      for part in flag.split('.'):
        node = node.get(part) if hasattr(node, 'get') and part in node else None
        if node is None:
          break
      found = found or node is not None
    assert found, flag


def test_tensorboard_reads_the_summaries(tmp_path):
  """What `tensorboard --logdir RUN/tensorboard` shows: the logged scalars."""
  event_accumulator = pytest.importorskip(
      'tensorboard.backend.event_processing.event_accumulator')
  from bitmaps_jax.train import reporting
  rep = reporting.Reporter(str(tmp_path), total_steps=2)
  rep.write(1, 'train', {'loss': 2.5})
  rep.write(2, 'valid', {'loss': 2.0, 'accuracy': 0.25})
  rep.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  acc.Reload()
  assert {'train/loss', 'valid/loss', 'valid/accuracy'} <= set(acc.Tags()['scalars'])
  assert [e.value for e in acc.Scalars('valid/accuracy')] == [0.25]


def test_package_installs_and_imports_anywhere(tmp_path):
  import shutil
  source = tmp_path / 'src'  # a copy, so the build leaves nothing in the checkout
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
      '.venv', '.git', 'runs', 'build', '*.egg-info', '__pycache__', '.pytest_cache'))
  target = tmp_path / 'site'
  out = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                        '--no-build-isolation', '--target', str(target), str(source)],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  code = ('import bitmaps_jax, os; print(os.path.dirname(bitmaps_jax.__file__)); '
          'from bitmaps_jax import load_hf_bert, save_hf_bert, BertModel, BertConfig, '
          'BinarizeConfig, sign_ste; from bitmaps_jax.tools import memory')
  env = dict(os.environ, PYTHONPATH=str(target))
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                       text=True, env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().startswith(str(target))
