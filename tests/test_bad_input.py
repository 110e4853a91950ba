"""Bad input through the command-line entry points: one line naming what is wrong, exit code 2."""

import os

import pytest

from bitmaps_jax import export, runner
from test_glue import _tiny_glue_config
from test_train import tiny_config


def _one_line_error(capsys, call):
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    call()
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: '), err
  return err[0]


def test_bad_glue_inputs(tmp_path, capsys):
  def train(**changes):
    return lambda: runner.train(_tiny_glue_config(tmp_path, **changes), str(tmp_path / 'run'))

  # Malformed TSV row: the file and the line are named.
  config = _tiny_glue_config(tmp_path)
  train_tsv = os.path.join(config.data_dir, 'CoLA', 'train.tsv')
  rows = open(train_tsv).read().splitlines()
  rows[2] = 'src2\tmaybe\t\tthe cat'
  open(train_tsv, 'w').write('\n'.join(rows) + '\n')
  err = _one_line_error(capsys, lambda: runner.train(config, str(tmp_path / 'run')))
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
  # Nothing was created for the failed runs.
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_bad_pretraining_inputs(tmp_path, capsys):
  empty = tmp_path / 'empty.txt'
  empty.write_text('\n\n')
  config = tiny_config()
  config.data.source = 'text'
  config.data.train_files = str(empty)
  err = _one_line_error(capsys, lambda: runner.train(config, str(tmp_path / 'run')))
  assert 'empty.txt: corpus is empty' in err, err

  config = tiny_config()
  config.data.source = 'wikipedia'
  err = _one_line_error(capsys, lambda: runner.train(config, str(tmp_path / 'run')))
  assert "'wikipedia'" in err, err


def test_bad_export_inputs(tmp_path, capsys):
  err = _one_line_error(capsys, lambda: export.main([str(tmp_path), str(tmp_path / 'm.bin')]))
  assert str(tmp_path) in err, err
