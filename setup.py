"""Builds the 1-bit CPU kernel (bitmaps_jax/kernels/csrc) with the package.

The kernel is an XLA FFI handler: it compiles against the FFI headers that jaxlib ships. It is
optional: without a C++ compiler the install still succeeds, and packed models run through
XLA with one warning.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _ffi_include_dir():
  try:
    import jaxlib
  except ImportError:
    return None
  path = os.path.join(os.path.dirname(jaxlib.__file__), 'include')
  return path if os.path.isdir(os.path.join(path, 'xla', 'ffi', 'api')) else None


class OptionalBuildExt(build_ext):
  """A failed kernel build is a warning, not a failed install."""

  def run(self):
    try:
      super().run()
    except Exception as e:  # no compiler, or no headers
      print(f'warning: the 1-bit CPU kernel was not built ({e}); packed models will run '
            'through XLA')

  def build_extension(self, ext):
    try:
      super().build_extension(ext)
    except Exception as e:
      print(f'warning: the 1-bit CPU kernel was not built ({e}); packed models will run '
            'through XLA')


include = _ffi_include_dir()
ext_modules = []
if include is not None and os.environ.get('BITMAPS_NO_KERNEL') != '1':
  ext_modules.append(Extension(
      'bitmaps_jax.kernels._cpu_kernels',
      sources=['bitmaps_jax/kernels/csrc/sign_matmul.cc'],
      depends=['bitmaps_jax/kernels/csrc/amx_tiles.h', 'bitmaps_jax/kernels/csrc/cpu_common.h',
               'bitmaps_jax/kernels/csrc/lut_tables.h'],
      include_dirs=[include],
      language='c++',
      extra_compile_args=['-O3', '-std=c++17', '-w'],
      optional=True,
  ))
else:
  print('warning: jaxlib FFI headers not found; the 1-bit CPU kernel is not built')

setup(ext_modules=ext_modules, cmdclass={'build_ext': OptionalBuildExt})
