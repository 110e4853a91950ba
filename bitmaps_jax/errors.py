"""User-facing errors: one clear line, no traceback."""

import os
import sys


class UserError(Exception):
  """A mistake the user can fix (bad path, bad config, bad file).

  Command-line entry points catch it and print its message as a single line.
  """


class DiskFullError(UserError):
  """A save ran out of space. I/O libraries may still print their aftermath on the way out
  (closed event loops of failed writes); after the one line nothing more is said."""


def exit_with_error(message) -> None:
  """Ends the process the way every entry point reports a user's mistake: one line, status 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  if isinstance(message, DiskFullError):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stderr.fileno())
  sys.exit(2)

