"""Helpers for tests that launch the real program as a user would (tiny configs: tests/fakes.py)."""

import atexit
import csv
import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from tests.listening import Listener, listening

ROOT = pathlib.Path(__file__).resolve().parents[1]

_shared_server = []  # The session's fork server (launch.local.forkserver), once started.


def shared_fork_server():
  """One fork server for every launch of this test session: each pays its imports once.

  The launches use it through $COLLECT_INFER_FORK_SERVER (launch.local.launcher); the
  shared budget run does not, so the default per-launch server is tested end to end too.
  """
  if not _shared_server:
    from launch import loopback
    from launch.local.forkserver import ForkServer
    from launch.local.launcher import fork_server_env

    server = ForkServer(fork_server_env(loopback.preload_env()))
    atexit.register(server.stop)
    server.wait_ready()
    _shared_server.append(server)
  return _shared_server[0]


def start_cli(
  run_dir: pathlib.Path,
  *args: str,
  log: Optional[pathlib.Path] = None,
  share_fork_server: bool = True,
) -> subprocess.Popen:
  """Starts `python -m experiments.collect_infer` in its own session (like a terminal job).

  With `share_fork_server` its nodes are forks of the session's fork server.
  """
  log = log or run_dir.parent / f'{run_dir.name}-{time.time_ns()}.log'
  out = open(log, 'w')
  env = dict(os.environ)
  if share_fork_server:
    from launch.local.forkserver import SHARED_ENV

    env[SHARED_ENV] = shared_fork_server().socket_path
  proc = subprocess.Popen(
    [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', str(run_dir), *args],
    cwd=ROOT,
    stdout=out,
    stderr=subprocess.STDOUT,
    start_new_session=True,
    env=env,
  )
  proc.log_path = log
  return proc


def output(proc: subprocess.Popen) -> str:
  return pathlib.Path(proc.log_path).read_text(errors='replace')


def pid_alive(pid: int) -> bool:
  """Whether `pid` runs (a zombie waiting for its reaper counts as gone)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):  # gone before, or while, reading (ENOENT, ESRCH)
    return False


def _children(pid: int) -> List[int]:
  found = []
  try:
    for task in os.listdir(f'/proc/{pid}/task'):
      with open(f'/proc/{pid}/task/{task}/children') as f:
        found += [int(c) for c in f.read().split()]
  except OSError:
    pass
  return found


def session_processes(sid: int) -> List[int]:
  """PIDs still alive in the session `sid` (the launcher and every node it started).

  Nodes forked by the session's shared fork server live in the test's session, not the
  launcher's: they are counted in too (with their children). Tests run one launch at a
  time, so they are that launch's, or ones an earlier launch left behind.
  """
  alive = []
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        if os.getsid(int(entry)) == sid:
          alive.append(int(entry))
      except (ProcessLookupError, PermissionError):
        pass
  if _shared_server:
    todo = _children(_shared_server[0].pid)
    while todo:
      pid = todo.pop()
      alive.append(pid)
      todo += _children(pid)
  return alive


def leftover_processes(sid: int, grace: float = 5.0) -> List[str]:
  """Command lines of processes of session `sid` still alive after a short grace period."""
  deadline = time.time() + grace
  while True:
    pids = session_processes(sid)
    if not pids or time.time() > deadline:
      break
    time.sleep(0.2)
  lines = []
  for pid in pids:
    try:
      lines.append(f'{pid}: ' + open(f'/proc/{pid}/cmdline').read().replace('\0', ' ')[:300])
    except OSError:
      pass
  return lines


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
  try:
    return proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    kill_session(proc)
    raise AssertionError(
      f'program did not exit within {timeout}s; output:\n{output(proc)[-5000:]}'
    ) from None


def wait_exit_listening(
  proc: subprocess.Popen, timeout: float, poll: float = 1.0
) -> Tuple[int, Tuple[Listener, ...]]:
  """`wait_exit`, also returning every listening TCP socket the program's processes held."""
  seen: Dict[Tuple[int, str], Listener] = {}
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline:
    for s in listening(session_processes(proc.pid)):
      seen.setdefault((s.pid, str(s)), s)
    time.sleep(poll)
  return wait_exit(proc, timeout=max(1.0, deadline - time.time())), tuple(seen.values())


def kill_session(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  for pid in session_processes(proc.pid):
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


def read_counts(run_dir: pathlib.Path) -> dict:
  path = run_dir / 'counter.json'
  return json.loads(path.read_text())['counts'] if path.exists() else {}


def wait_for(predicate, timeout: float, what: str, proc: Optional[subprocess.Popen] = None):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc is not None and proc.poll() is not None:
      raise AssertionError(
        f'program exited ({proc.returncode}) before {what}:\n{output(proc)[-5000:]}'
      )
    time.sleep(1)
  raise AssertionError(
    f'timed out after {timeout}s waiting for {what}'
    + (f':\n{output(proc)[-5000:]}' if proc else '')
  )


def node_pid(proc: subprocess.Popen, node: str, timeout: float = 120) -> int:
  """The pid a node announced ('[actor_1] running as pid N on host'), once it has."""
  pattern = re.compile(rf'\[{re.escape(node)}\] running as pid (\d+)')
  found = []

  def announced():
    found[:] = pattern.findall(output(proc))
    return bool(found)

  wait_for(announced, timeout, f'{node} to announce its pid', proc)
  return int(found[-1])


@dataclasses.dataclass(frozen=True)
class FinishedRun:
  """A program that ran to its end: what tests that only observe it may read."""

  run_dir: pathlib.Path
  returncode: int
  text: str  # Everything it printed.
  leftover: List[str]  # Its processes still alive a few seconds after it exited.
  # Every listening TCP socket any of its processes held while it ran (polled each second).
  listening: Tuple[Listener, ...] = ()


def run_to_end(
  run_dir: pathlib.Path, *args: str, timeout: float, share_fork_server: bool = True
) -> FinishedRun:
  """Launches the program, waits for it to exit by itself, and records how it ended."""
  proc = start_cli(run_dir, *args, share_fork_server=share_fork_server)
  try:
    returncode, listeners = wait_exit_listening(proc, timeout=timeout)
    leftover = leftover_processes(proc.pid)
    return FinishedRun(run_dir, returncode, output(proc), leftover, listeners)
  finally:
    kill_session(proc)


def log_rows(run_dir: pathlib.Path, label: str) -> List[Dict[str, str]]:
  """The rows of a node's CSV log, logs/<label>/logs.csv (e.g. 'evaluator_cartpole_swingup')."""
  with open(pathlib.Path(run_dir) / 'logs' / label / 'logs.csv') as f:
    return list(csv.DictReader(f))


def stored_shapes(store_dir: pathlib.Path) -> Dict[Tuple[str, str], Tuple[int, int]]:
  """(source, task) -> (observation size, action size) of each stored episode."""
  from launch.store.episodes import EpisodeStore  # pylint: disable=g-import-not-at-top

  store = EpisodeStore(store_dir)
  shapes = {}
  for info in store.index():
    episode = store.read(info.episode_id)
    key = (episode.metadata['source'], episode.metadata['task'])
    shapes[key] = (episode.observations.shape[1], episode.actions.shape[1])
  return shapes
