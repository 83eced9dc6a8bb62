"""Running the real program (python -m experiments.collect_infer) and polling it: its
counts (counter.json, the replay table) and the peak RSS of every node process."""

import json
import os
import pathlib
import signal
import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple


def _peak_rss_kb(pid: int) -> Optional[int]:
  """The kernel's high-water mark of the process's RSS (VmHWM), in kB."""
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1])
  except OSError:
    return None
  return None


def node_name(pid: int, nodes_dir: pathlib.Path) -> Optional[str]:
  """'actor_0', 'learner_0'... from the per-node log file the process writes its stdout to."""
  try:
    target = pathlib.Path(os.readlink(f'/proc/{pid}/fd/1'))
    rel = target.relative_to(nodes_dir)
  except (OSError, ValueError):
    return None
  # <run>/logs/nodes/<launch time>/<group>/<task id>
  parts = rel.parts[1:] if len(rel.parts) > 2 else rel.parts
  return '_'.join(parts)


class RssSampler:
  """Peak RSS per node of a launcher's process tree, sampled by the caller."""

  def __init__(self, launcher_pid: int, run_dir: pathlib.Path):
    self.pid = launcher_pid
    self.nodes_dir = run_dir / 'logs' / 'nodes'
    self.peak_mb: Dict[str, float] = {}
    self.pids: Dict[int, str] = {}

  def sample(self) -> None:
    import psutil
    try:
      root = psutil.Process(self.pid)
      procs = [root] + root.children(recursive=True)
    except psutil.Error:
      return
    for p in procs:
      try:
        rss_kb = max(p.memory_info().rss // 1024, _peak_rss_kb(p.pid) or 0)
      except psutil.Error:
        continue
      name = self.pids.get(p.pid)
      if name is None:
        name = 'launcher' if p.pid == self.pid else node_name(p.pid, self.nodes_dir)
        if name is None:
          continue  # Not yet redirected (just forked); named on a later sample.
        self.pids[p.pid] = name
      self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), rss_kb / 1024.0)



def read_counts(run_dir: pathlib.Path) -> Optional[Dict[str, float]]:
  try:
    return json.loads((run_dir / 'counter.json').read_text()).get('counts', {})
  except (OSError, ValueError):
    return None


class ReplayProbe:
  """Insert and sample counts of a running program's replay table, at any moment.

  counter.json only moves when an actor finishes an episode (acme's loop counts steps
  per episode) and is saved every 5 s; the table counts every item as it arrives.
  """

  def __init__(self, run_dir: pathlib.Path):
    self._book = run_dir / 'addresses.json'
    self._client = None

  def counts(self) -> Optional[Dict[str, float]]:
    if self._client is None and not self._book.exists():
      return None  # Not launched yet.
    import reverb
    from agents.replay_pipeline import REPLAY_TABLE
    try:
      if self._client is None:
        self._client = reverb.Client(json.loads(self._book.read_text())['replay'])
      info = self._client.server_info(timeout=2)[REPLAY_TABLE].rate_limiter_info
    except Exception:  # pylint: disable=broad-except
      return None  # Not started yet, or already stopped.
    return {'replay_inserts': info.insert_stats.completed,
            'replay_samples': info.sample_stats.completed}


def run_program(argv: List[str], run_dir: pathlib.Path, timeout_s: float,
                poll_s: float = 1.0, until: Optional[Callable[[], bool]] = None,
                probe_replay: bool = True
                ) -> Tuple[int, List[Tuple[float, Dict[str, float]]], RssSampler, float]:
  """Runs a collect_infer command, polling its counts and RSS every `poll_s`.

  Ctrl-C (SIGINT) stops it cleanly when `until()` turns true or at `timeout_s`.
  Returns (exit code, [(seconds, counter.json counts + replay counts)], RSS sampler,
  wall seconds).
  """
  run_dir.mkdir(parents=True, exist_ok=True)
  log = open(run_dir / 'launcher.log', 'w')
  start = time.time()
  proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
  sampler = RssSampler(proc.pid, run_dir)
  probe = ReplayProbe(run_dir) if probe_replay else None
  series: List[Tuple[float, Dict[str, float]]] = []
  interrupted_at = None
  try:
    while proc.poll() is None:
      sampler.sample()
      counts = {**(read_counts(run_dir) or {}), **((probe and probe.counts()) or {})}
      now = time.time() - start
      if counts:
        series.append((now, counts))
      if interrupted_at is None and (now > timeout_s or (until is not None and until())):
        proc.send_signal(signal.SIGINT)
        interrupted_at = now
      elif interrupted_at is not None and now > interrupted_at + 90:
        _kill_tree(sampler)
      time.sleep(poll_s)
  except KeyboardInterrupt:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=90)
    raise
  finally:
    log.close()
  counts = read_counts(run_dir)
  if counts:
    series.append((time.time() - start, counts))
  return proc.returncode, series, sampler, time.time() - start


def _kill_tree(sampler: RssSampler) -> None:
  """Last resort for a launcher that ignored Ctrl-C: the processes it started, by pid."""
  for pid in list(sampler.pids) + [sampler.pid]:
    try:
      os.kill(pid, signal.SIGKILL)
    except OSError:
      pass
