"""User-facing errors: one clear line, no traceback."""

import sys


class UserError(Exception):
  """A mistake the user can fix (bad path, bad config, bad file).

  Command-line entry points catch it and print its message as a single line.
  """


def exit_with_error(message) -> None:
  """Ends the process the way every entry point reports a user's mistake: one line, status 2."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)

