"""One logger for library code: lines go out as `[<node>] message`, flushed at once.

Library code (agents/, launch/, environments/) logs through `get_logger(node)`, never
`print`; entry points (experiments/, `__main__` modules and command-line mains) may print.
Node processes' output is captured per node by the launcher, so every line names its node.
"""

import logging
import sys

_ROOT = 'collect_infer'


class _NodeFormatter(logging.Formatter):
  """`[node] message`; warnings and errors say so."""

  def format(self, record: logging.LogRecord) -> str:
    node = record.name[len(_ROOT) + 1 :] if record.name.startswith(_ROOT + '.') else record.name
    level = '' if record.levelno < logging.WARNING else f'{record.levelname.lower()}: '
    text = f'[{node}] {level}{record.getMessage()}'
    if record.exc_info:
      text += '\n' + self.formatException(record.exc_info)
    return text


class _FlushingHandler(logging.StreamHandler):
  """Writes to the current sys.stdout (tests and launchers may swap it), flushed per line."""

  def __init__(self):
    super().__init__()
    self.setFormatter(_NodeFormatter())

  @property
  def stream(self):
    return sys.stdout

  @stream.setter
  def stream(self, value):
    pass  # Always the current sys.stdout.


def _root() -> logging.Logger:
  root = logging.getLogger(_ROOT)
  if not root.handlers:
    root.addHandler(_FlushingHandler())
    root.setLevel(logging.INFO)
    root.propagate = False  # absl's handler would print every line a second time.
  return root


def get_logger(node: str) -> logging.Logger:
  """The logger of one node or component, e.g. 'learner', 'actor 1', 'store', 'attach arm1'."""
  _root()
  return logging.getLogger(f'{_ROOT}.{node}')
