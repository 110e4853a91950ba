"""Bad input through the command-line entry points: one line naming what is wrong, exit code 2."""

import os
import subprocess
import sys

import pytest

from bitmaps_jax import cli
from bitmaps_jax.tools import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line_error(capsys, call):
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    call()
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: '), err
  return err[0]


def test_bad_glue_inputs(tmp_path, capsys, glue_config):
  def train(**changes):
    return lambda: cli.train(glue_config(**changes), str(tmp_path / 'run'))

  # Malformed TSV row: the file and the line are named.
  config = glue_config()
  train_tsv = os.path.join(config.data_dir, 'CoLA', 'train.tsv')
  rows = open(train_tsv).read().splitlines()
  rows[2] = 'src2\tmaybe\t\tthe cat'
  open(train_tsv, 'w').write('\n'.join(rows) + '\n')
  err = _one_line_error(capsys, lambda: cli.train(config, str(tmp_path / 'run')))
  assert 'CoLA/train.tsv:3' in err and "'maybe'" in err, err

  # Unknown task, missing teacher, corrupt HF directory as the starting checkpoint.
  assert "unknown GLUE task 'mnli'" in _one_line_error(capsys, train(task_name='mnli'))
  missing = str(tmp_path / 'no-teacher')
  assert missing in _one_line_error(capsys, train(teacher_checkpoint=missing))
  hf = tmp_path / 'hf'
  hf.mkdir()
  (hf / 'config.json').write_text('{"model_type": "bert", "hidden_size": ')
  err = _one_line_error(capsys, train(init_checkpoint=str(hf)))
  assert 'config.json' in err, err
  # A teacher of another size than the student it should be matched with, layer by layer.
  cli.train(glue_config(num_epochs=1.0, binarize={'layers': False}),
               str(tmp_path / 'teacher'))
  cli.train(glue_config(num_epochs=1.0, model='mini'),
               str(tmp_path / 'mini'))
  err = _one_line_error(capsys, train(teacher_checkpoint=str(tmp_path / 'teacher'),
                                      init_checkpoint=str(tmp_path / 'mini'), tokenizer=''))
  assert 'teacher has num_hidden_layers 2, the student 4' in err, err
  # Nothing was created for the failed runs.
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_bad_pretraining_inputs(tmp_path, capsys, mlm_config):
  empty = tmp_path / 'empty.txt'
  empty.write_text('\n\n')
  config = mlm_config()
  config.data.source = 'text'
  config.data.train_files = str(empty)
  err = _one_line_error(capsys, lambda: cli.train(config, str(tmp_path / 'run')))
  assert 'empty.txt: corpus is empty' in err, err

  config = mlm_config()
  config.data.source = 'wikipedia'
  err = _one_line_error(capsys, lambda: cli.train(config, str(tmp_path / 'run')))
  assert "'wikipedia'" in err, err


def test_bad_export_inputs(tmp_path, capsys):
  err = _one_line_error(capsys, lambda: export.main([str(tmp_path), str(tmp_path / 'm.bin')]))
  assert str(tmp_path) in err, err


@pytest.mark.parametrize('args, message', [
    (['train.py', '--config', 'configs/nope.py'],
     "--config: cannot load the config file ([Errno 2] No such file or directory: "
     "'configs/nope.py')"),
    (['train.py', '--config.learning_rat=0.1'],
     "--config.learning_rat=0.1: unknown config field 'learning_rat'"),
    (['eval.py', '--workdir', 'nowhere', '--config.data_dirr=x'],
     "--config.data_dirr=x: unknown config field 'data_dirr'"),
])
def test_config_flag_mistakes_are_one_line(tmp_path, args, message, glue_config):
  if args[0] == 'train.py':
    args = args + ['--workdir', str(tmp_path / 'run')]
  if args[0] == 'eval.py':  # a real run directory, so the overrides apply to its config
    cli.train(glue_config(num_epochs=1.0), str(tmp_path / 'run'))
    args[2] = str(tmp_path / 'run')
  out = subprocess.run([sys.executable] + args, cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 2, out.stderr
  err = out.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ' + message), err
  assert not os.path.exists(tmp_path / 'run' / 'metrics.jsonl') or args[0] == 'eval.py'
