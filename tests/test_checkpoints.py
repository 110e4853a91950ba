"""Dropping old checkpoints: a step leaves the step names whole before any file of it is deleted."""

import os

import numpy as np
import pytest

from bitmaps_jax.train import checkpoints


def _state(step):
  return {'params': {'w': np.full((4, 3), float(step), np.float32)}}


def _steps(directory):
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def test_a_kill_while_deleting_an_old_step_leaves_every_step_name_whole(tmp_path, monkeypatch):
  directory = str(tmp_path / 'checkpoints')
  store = checkpoints.CheckpointStore(directory, keep=2)
  store.save(1, _state(1), {'step': 1})
  store.save(2, _state(2), {'step': 2})

  def killed(path):
    raise KeyboardInterrupt(f'killed while deleting {path}')
  monkeypatch.setattr(checkpoints.files, 'rmtree', killed)
  with pytest.raises(KeyboardInterrupt):  # the third save drops step 1
    store.save(3, _state(3), {'step': 3})
  monkeypatch.undo()
  store.close()

  assert _steps(directory) == [2, 3]
  assert os.listdir(os.path.join(directory, checkpoints.TRASH_DIR)) == ['1']
  store = checkpoints.CheckpointStore(directory, keep=2)
  for step in (2, 3):
    np.testing.assert_array_equal(store.restore_params(step)['w'], _state(step)['params']['w'])
  store.save(4, _state(4), {'step': 4})  # the next save finishes the deletion
  store.close()
  assert sorted(os.listdir(directory)) == ['3', '4']


def test_async_saves_leave_only_the_kept_steps(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  store = checkpoints.CheckpointStore(directory, keep=2, async_save=True)
  for step in range(1, 6):
    store.save(step, _state(step), {'step': step})
  store.wait()
  store.close()
  assert sorted(os.listdir(directory)) == ['4', '5']
