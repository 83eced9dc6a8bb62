"""Episodes offered, stored, duplicated and lost by an attached robot under a fault run.

Launches a tiny program (local_mp, one actor, a long budget) in a fresh run directory,
attaches one simulated robot (`python -m launch.attach`, 2 s episodes) whose outbox lies on
a small tmpfs, then injects one fault after another while the robot stays attached:

  learner_killed  kill -9 of the learner node; the program ends (exit 1) and is relaunched
                  on the same run directory
  replay_killed   kill -9 of the replay node; relaunched the same way
  network_cut     the gateway node frozen (SIGSTOP) for --cut_s, then SIGCONT: the robot's
                  calls get no answer at all, as behind a pulled cable
  disk_full       a ballast file fills the robot's tmpfs for --disk_full_s, then is deleted:
                  episodes finished meanwhile are dropped on the robot and counted
  drain           the robot empties its outbox and stops (SIGINT), then the program stops

After each fault it waits for the robot to have delivered everything again. Per phase:
offered (episodes the robot finished), dropped_reported (dropped on the robot with a reason:
the status file's dropped_outbox and dropped_invalid), stored (distinct robot_episode_id in
the run's store under writer external_<name>, by the time the robot buffered them),
duplicates (records of an id beyond its first) and lost = offered - dropped_reported -
stored; and peak_pending, the most episodes waiting in the robot's outbox at once (sampled
every 0.5 s), which shows that the fault did hold delivery up. Mounting the tmpfs needs root.

  python -m experiments.robot_faults --out experiments/results/robot_faults

Writes <out>/robot_faults.csv (one row per phase and a total row) and <out>/robot_faults.png,
and prints the table.
"""

import argparse
import collections
import csv
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from launch.robot.wire import EPISODE_KEY
from launch.store.episodes import EpisodeStore

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROBOT = 'faulty_arm'
HZ = 20
EPISODE_STEPS = 40  # 2 s episodes.
# A tiny agent (these check the system, not learning), one actor, a budget never reached.
PROGRAM_ARGS = [
  *('--num_actors', '1', '--max_actor_steps', '1000000000'),
  *('--agent', 'policy_layer_sizes=[32,32]', '--agent', 'critic_layer_sizes=[32,32]'),
  *('--agent', 'replay.batch_size=32', '--agent', 'replay.min_replay_size=200'),
  *('--agent', 'num_samples=4', '--eval_every_seconds', '30', '--eval_episodes', '1'),
]
FIELDS = (
  'phase',
  'offered',
  'stored',
  'duplicates',
  'dropped_reported',
  'lost',
  'peak_pending',
  'seconds',
)


def parse_args(argv):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--out', default='experiments/results/robot_faults')
  p.add_argument('--work_dir', default=None, help='default: a fresh temporary directory')
  p.add_argument('--tmpfs_mb', type=int, default=4, help="size of the robot's disk (tmpfs)")
  p.add_argument('--cut_s', type=float, default=20.0, help='how long the gateway is frozen')
  p.add_argument('--disk_full_s', type=float, default=20.0, help='how long the disk is full')
  p.add_argument('--timeout_s', type=float, default=300.0, help='longest wait for a step')
  return p.parse_args(argv)


class Run:
  """The program (relaunched as needed) and the attached robot, with their logs."""

  def __init__(self, work: pathlib.Path, outbox: pathlib.Path, timeout: float):
    self.work, self.outbox, self.timeout = work, outbox, timeout
    self.run_dir = work / 'run'
    self.status_path = work / 'robot_status.json'
    self.env = dict(os.environ, COLLECT_INFER_HOST='127.0.0.1', PYTHONPATH=str(ROOT))
    self.program: Optional[subprocess.Popen] = None
    self.robot: Optional[subprocess.Popen] = None
    self.launches = 0
    self.peak_pending = 0  # Most episodes waiting in the outbox since the last mark.

  def watch_outbox(self) -> None:
    """Samples the robot's undelivered episodes every 0.5 s (a daemon thread)."""

    def sample():
      while True:
        try:
          pending = json.loads(self.status_path.read_text())['delivery']['pending']
          self.peak_pending = max(self.peak_pending, pending)
        except (OSError, ValueError, KeyError):
          pass
        time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()

  def _start(self, cmd: List[str], log: pathlib.Path) -> subprocess.Popen:
    proc = subprocess.Popen(
      [sys.executable, '-m', *cmd],
      cwd=ROOT,
      env=self.env,
      stdout=open(log, 'w'),
      stderr=subprocess.STDOUT,
      start_new_session=True,
    )
    proc.log_path = log
    return proc

  def launch(self) -> None:
    """Launches (the first time) or relaunches the program on the run directory."""
    self.launches += 1
    args = PROGRAM_ARGS if self.launches == 1 else []  # A relaunch reads the saved config.
    log = self.work / f'program-{self.launches}.log'
    self.program = self._start(
      ['experiments.collect_infer', '--run_dir', str(self.run_dir), *args], log
    )
    print(f'  program launch {self.launches} (log {log})', flush=True)

  def attach(self) -> None:
    self.robot = self._start(
      [
        'launch.attach',
        *('--run_dir', str(self.run_dir), '--name', ROBOT, '--buffer_dir', str(self.outbox)),
        *('--env', 'environments.simulated_robot:make_simulated_robot_env'),
        *('--env_arg', f'control_hz={HZ}', '--env_arg', f'max_episode_steps={EPISODE_STEPS}'),
        *('--status_file', str(self.status_path), '--status_every_s', '0.5'),
        *('--refresh_every_s', '0.5', '--max_backoff_s', '2', '--disconnect_after_s', '3'),
        *('--connect_timeout_s', '300', '--flush_timeout_s', '60'),
      ],
      self.work / 'robot.log',
    )

  def status(self) -> Dict[str, Any]:
    for _ in range(20):
      try:
        return json.loads(self.status_path.read_text())
      except (OSError, ValueError):
        time.sleep(0.5)
    raise RuntimeError(f'no status file {self.status_path}')

  def wait(self, predicate: Callable[[], bool], what: str, watch=()) -> None:
    deadline = time.time() + self.timeout
    while time.time() < deadline:
      if predicate():
        return
      for proc in (self.robot, *watch):
        if proc is not None and proc.poll() is not None:
          raise RuntimeError(f'{what}: {proc.log_path} exited with {proc.returncode}')
      time.sleep(0.5)
    raise RuntimeError(f'timed out after {self.timeout:g} s waiting for {what}')

  def node_pid(self, node: str) -> int:
    pattern = re.compile(rf'\[{node}\] running as pid (\d+)')
    found = []

    def announced():
      found[:] = pattern.findall(self.program.log_path.read_text())
      return bool(found)

    self.wait(announced, f'the {node} to announce its pid', [self.program])
    pid = int(found[-1])
    assert os.getsid(pid) == self.program.pid, f'pid {pid} is not a node of the program'
    return pid

  def caught_up(self, since: float, watch=()) -> None:
    """Waits until the robot, connected to a program launched after `since`, has sent all."""

    def done():
      s = self.status()
      started = (s.get('program') or {}).get('started') or 0
      return s['connected'] and s['delivery']['pending'] == 0 and started > since

    self.wait(done, 'the robot to deliver its outbox', watch)

  def kill_node(self, node: str) -> None:
    """kill -9 of a node; the program ends (local_mp), then is relaunched and caught up."""
    pid = self.node_pid(node)
    print(f'  kill -9 {node} (pid {pid})', flush=True)
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    rc = self.program.wait(timeout=self.timeout)
    print(f'  program exited with {rc}', flush=True)
    self.launch()
    self.caught_up(killed, [self.program])

  def stop(self, proc: Optional[subprocess.Popen], grace: float = 120) -> Optional[int]:
    if proc is None or proc.poll() is not None:
      return None if proc is None else proc.returncode
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal.
    try:
      return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      return proc.wait()


def network_cut(run: Run, seconds: float) -> None:
  pid = run.node_pid('gateway')
  print(f'  SIGSTOP gateway (pid {pid}) for {seconds:g} s', flush=True)
  os.kill(pid, signal.SIGSTOP)
  try:
    time.sleep(seconds)
    print(f'  during the cut: {json.dumps(run.status()["delivery"])}', flush=True)
  finally:
    os.kill(pid, signal.SIGCONT)
  resumed = time.time()
  run.wait(
    lambda: run.status()['time'] > resumed + 1 and run.status()['delivery']['pending'] == 0,
    'the robot to deliver after the cut',
    [run.program],
  )


def disk_full(run: Run, disk: pathlib.Path, seconds: float) -> None:
  """Keeps the robot's tmpfs full with a ballast file for `seconds`, then deletes it.

  Topped up every 0.2 s: what the robot's outbox frees as it delivers is taken again.
  """
  ballast = disk / 'ballast'
  with open(ballast, 'ab', buffering=0) as f:
    end = time.time() + seconds
    while time.time() < end:
      try:
        while True:
          f.write(b'\0' * 4096)
      except OSError:
        pass  # ENOSPC: the disk is full.
      time.sleep(0.2)
  print(f'  disk was full for {seconds:g} s ({ballast.stat().st_size / 2**20:.1f} MiB ballast)')
  ballast.unlink()
  freed = time.time()
  run.wait(
    lambda: run.status()['time'] > freed + 1 and run.status()['delivery']['pending'] == 0,
    'the robot to deliver after the disk was freed',
    [run.program],
  )


def stored_episodes(run_dir: pathlib.Path) -> List[Dict[str, Any]]:
  store = EpisodeStore(run_dir / 'store', verify=False)
  return [i.metadata for i in store.index() if i.writer == f'external_{ROBOT}']


def phase_rows(marks: List[Dict[str, Any]], stored: List[Dict[str, Any]]) -> List[Dict]:
  """One row per phase between consecutive marks (name, robot status, wall time)."""
  rows = []
  for before, after in zip(marks, marks[1:]):
    t0, t1 = before['status']['time'], after['status']['time']
    ids = [m[EPISODE_KEY] for m in stored if t0 < m['buffered_time'] <= t1]
    e0, e1 = before['status']['episodes'], after['status']['episodes']
    offered = e1['episodes'] - e0['episodes']
    dropped = sum(e1[k] - e0[k] for k in ('dropped_outbox', 'dropped_invalid'))
    unique = len(set(ids))
    rows.append(
      dict(
        phase=after['name'],
        offered=offered,
        stored=unique,
        duplicates=len(ids) - unique,
        dropped_reported=dropped,
        lost=offered - dropped - unique,
        peak_pending=after['peak'],
        seconds=round(after['wall'] - before['wall'], 1),
      )
    )
  total = {k: sum(r[k] for r in rows) for k in FIELDS[1:]}
  # The total counts every stored record, whatever its time (the phases' sum should agree).
  ids = collections.Counter(m[EPISODE_KEY] for m in stored)
  total.update(stored=len(ids), duplicates=sum(ids.values()) - len(ids))
  total['lost'] = total['offered'] - total['dropped_reported'] - total['stored']
  total['seconds'] = round(total['seconds'], 1)
  total['peak_pending'] = max(r['peak_pending'] for r in rows)
  return rows + [dict(phase='total', **total)]


def write_outputs(out: pathlib.Path, rows: List[Dict[str, Any]]) -> None:
  out.mkdir(parents=True, exist_ok=True)
  with open(out / 'robot_faults.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  phases = [r for r in rows if r['phase'] != 'total']
  names = [r['phase'] for r in phases]
  fig, ax = plt.subplots(figsize=(8, 4))
  bottom = [0] * len(phases)
  for key, color in (
    ('stored', 'tab:green'),
    ('dropped_reported', 'tab:orange'),
    ('lost', 'tab:red'),
  ):
    values = [max(0, r[key]) for r in phases]
    ax.bar(names, values, bottom=bottom, label=key, color=color)
    bottom = [b + v for b, v in zip(bottom, values)]
  ax.plot(names, [r['offered'] for r in phases], 'k_', markersize=30, label='offered')
  ax.set_ylabel('robot episodes')
  ax.set_title('Robot episodes under faults (one run)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(out / 'robot_faults.png', dpi=100)


def format_table(rows: List[Dict[str, Any]]) -> str:
  widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in FIELDS]
  lines = ['  '.join(c.rjust(w) for c, w in zip(FIELDS, widths))]
  lines += ['  '.join(str(r[c]).rjust(w) for c, w in zip(FIELDS, widths)) for r in rows]
  return '\n'.join(lines)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix='robot_faults_'))
  disk = work / 'robot_disk'
  disk.mkdir(parents=True)
  subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', f'size={args.tmpfs_mb}m', 'tmpfs', str(disk)], check=True
  )
  run = Run(work, disk / 'outbox', args.timeout_s)
  marks = []

  def mark(name: str) -> None:
    time.sleep(1.0)  # A fresh status file (written every 0.5 s).
    marks.append(dict(name=name, status=run.status(), wall=time.time(), peak=run.peak_pending))
    run.peak_pending = 0
    print(f'{name}: done at {time.strftime("%H:%M:%S")}', flush=True)

  try:
    print(f'work directory {work}', flush=True)
    run.launch()
    book = run.run_dir / 'addresses.json'  # Written with the token, once the nodes are up.
    run.wait(book.exists, 'the address book', [run.program])
    run.attach()
    run.watch_outbox()
    zero = dict(episodes=0, dropped_outbox=0, dropped_invalid=0)
    marks.append(dict(name='attach', status=dict(time=0, episodes=zero), wall=time.time()))
    run.wait(
      lambda: run.status_path.exists() and run.status()['delivery'].get('store', 0) >= 8,
      'eight robot episodes delivered',
      [run.program],
    )
    mark('baseline')
    run.kill_node('learner')
    mark('learner_killed')
    run.kill_node('replay')
    mark('replay_killed')
    network_cut(run, args.cut_s)
    mark('network_cut')
    disk_full(run, disk, args.disk_full_s)
    mark('disk_full')
    run.caught_up(0, [run.program])
    rc = run.stop(run.robot)
    print(f'  robot stopped ({rc})', flush=True)
    marks.append(dict(name='drain', status=run.status(), wall=time.time(), peak=run.peak_pending))
    final = marks[-1]['status']
    print(f'  robot final: {json.dumps(final["episodes"])}', flush=True)
    print(f'  delivery: {json.dumps(final["delivery"])}', flush=True)
    rc = run.stop(run.program)
    print(f'  program stopped ({rc})', flush=True)
  finally:
    for proc in (run.robot, run.program):
      if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run(['umount', str(disk)], check=False)
  rows = phase_rows(marks, stored_episodes(run.run_dir))
  write_outputs(pathlib.Path(args.out), rows)
  print(format_table(rows))
  return 0 if rows[-1]['lost'] == 0 and rows[-1]['duplicates'] == 0 else 1


if __name__ == '__main__':
  sys.exit(main())
