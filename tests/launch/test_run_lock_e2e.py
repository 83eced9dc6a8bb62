"""kill -9 of the launcher alone: its nodes stop, saving their state, and hold the run till then."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from launch.checkpointing import Checkpointer
from tests.e2e_util import (
  ROOT,
  kill_session,
  leftover_processes,
  node_pid,
  output,
  pid_alive,
  read_counts,
  start_cli,
  wait_for,
)
from tests.fakes import TINY

pytestmark = pytest.mark.slow

NODES = ('replay', 'counter', 'learner', 'gateway', 'actor_0', 'evaluator')


def _seconds_to_exit(pid: int, timeout: float) -> float:
  start = time.monotonic()
  while pid_alive(pid):
    if time.monotonic() - start > timeout:
      raise AssertionError(f'pid {pid} still runs {timeout}s after its launcher was killed')
    time.sleep(0.1)
  return time.monotonic() - start


def _cli(run_dir: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', str(run_dir), *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_nodes_die_with_a_killed_launcher_and_hold_the_run_until_they_have(tmp_path):
  run_dir = tmp_path / 'run'
  proc = start_cli(run_dir, '--max_actor_steps', '1000000', '--num_actors', '1', *TINY)
  try:
    pids = {node: node_pid(proc, node) for node in NODES}
    wait_for(
      lambda: read_counts(run_dir).get('learner_steps', 0) > 0, 300, 'the learner to train', proc
    )
    # A stopped learner outlives the launcher for as long as the test wants (the
    # parent-death SIGTERM stays pending): the run must be refused all that time.
    os.kill(pids['learner'], signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGKILL)  # The launcher only.
    proc.wait(timeout=10)
    took = {n: _seconds_to_exit(p, timeout=20) for n, p in pids.items() if n != 'learner'}
    print('seconds from the launcher kill to each node exit:', took)

    refused = _cli(run_dir, *TINY)
    errors = [line for line in refused.stderr.splitlines() if line.startswith('error:')]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-3000:]
    assert f'pids {pids["learner"]} ' in errors[0], errors[0]
    assert 'whose launcher is gone' in errors[0], errors[0]

    os.kill(pids['learner'], signal.SIGCONT)
    print('learner exit after SIGCONT (s):', _seconds_to_exit(pids['learner'], timeout=20))
    # (Orphans are reaped by init, which may take a moment: hence the grace.)
    assert leftover_processes(proc.pid) == []
  finally:
    kill_session(proc)

  # Each node stopped as on Ctrl-C, saving its state: the learner's final checkpoint,
  # replay's, the counter's counts.
  logs = ''.join(p.read_text(errors='replace') for p in run_dir.glob('logs/nodes/*/*/*'))
  final = re.search(r'\[learner\] stopped at step (\d+); final checkpoint', logs)
  assert final, logs[-3000:] + output(proc)[-2000:]
  assert Checkpointer(run_dir / 'checkpoints').all_steps()[-1] == int(final.group(1))
  assert '[replay] final checkpoint' in logs, logs[-3000:]
  assert '[counter] stopped; counts saved' in logs, logs[-3000:]

  # With every node gone the run is free: a launch takes it (and, given a learner budget
  # already spent, stops there rather than start a whole program again).
  again = _cli(run_dir, '--max_learner_steps', '1')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'already reached' in again.stdout, again.stdout[-3000:]
