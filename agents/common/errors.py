"""Errors the launcher reports to the user as a single line, without a traceback."""


class UserError(Exception):
  """A mistake the user can fix; the message is one line saying what to change.

  The launcher catches this at the top level and prints only the message, so
  raise it only when the message alone is enough to act on.
  """


class ConfigError(UserError, ValueError):
  """An invalid configuration value or flag combination."""


class RunDirError(UserError):
  """The run directory can't be used (unwritable, locked, missing or damaged files)."""


class ProgramError(Exception):
  """A node of a running program failed; its own log holds the traceback."""
