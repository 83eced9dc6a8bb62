"""Per-node log files under the run directory, echoed to the launcher's terminal."""

import pathlib
import re
import sys
import threading
from typing import Dict, Optional, TextIO

# Library chatter every node prints at import, and absl INFO lines (kept in the
# node's file): they say nothing the terminal needs.
_NOISE = re.compile(
    r'^I\d{4} \d\d:\d\d:\d\d|Gym has been unmaintained|Please upgrade to Gymnasium|Users of this version of Gym|'
    r'See the migration guide at https://gymnasium|GLFWError|warnings\.warn\(|'
    r'np_bool = np\.dtype|Logging to: ')
# Launchpad's shutdown countdown, printed without a newline before a node's own lines.
_COUNTDOWN = re.compile(r'(\x1b\[[0-9;]*m)?Waiting for workers to stop for \d+s\.(\x1b\[0m)?')


class NodeLogFollower(threading.Thread):
  """Tails every file under `directory` and prints new lines as '[node] line'.

  It relays other processes' output, already written by their own loggers, to the
  launcher's terminal: it writes to a stream, not through a logger, which would
  level and format each line a second time.
  """

  def __init__(self, directory: pathlib.Path, out: Optional[TextIO] = None,
               poll_seconds: float = 0.5):
    super().__init__(name='node-log-follower', daemon=True)
    self._dir = pathlib.Path(directory)
    self._out = out or sys.stdout
    self._poll = poll_seconds
    self._offsets: Dict[pathlib.Path, int] = {}
    self._partial: Dict[pathlib.Path, str] = {}
    self._halt = threading.Event()

  def poll(self) -> None:
    if not self._dir.exists():
      return
    for path in sorted(p for p in self._dir.rglob('*') if p.is_file()):
      offset = self._offsets.get(path, 0)
      with open(path, 'r', errors='replace') as f:
        f.seek(offset)
        chunk = f.read()
        self._offsets[path] = f.tell()
      if not chunk:
        continue
      text = self._partial.pop(path, '') + chunk
      lines = text.split('\n')
      if lines[-1]:
        self._partial[path] = lines[-1]
      node = str(path.relative_to(self._dir))
      for line in lines[:-1]:
        line = _COUNTDOWN.sub('', line)
        if line.strip() and not _NOISE.search(line):
          self._out.write(f'[{node}] {line}\n')
      self._out.flush()

  def run(self):
    while not self._halt.wait(self._poll):
      self.poll()

  def stop(self) -> None:
    self._halt.set()
    self.join(timeout=5)
    self.poll()
