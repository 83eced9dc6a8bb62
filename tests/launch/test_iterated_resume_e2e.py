"""An iterated run stopped mid-way resumes at its iteration, with its collect target."""

import os
import re
import signal
import time

import pytest

from launch.checkpointing import Checkpointer
from launch.store.episodes import EpisodeStore
from tests.e2e_util import (
  kill_session,
  leftover_processes,
  output,
  start_cli,
  wait_exit,
  wait_for,
)
from tests.fakes import TINY

pytestmark = pytest.mark.slow

ITERATED = ['--mode', 'iterated', '--iterations', '2', '--collect_episodes', '1']
ITERATED += ['--infer_steps', '40', '--num_actors', '1', *TINY]


def test_a_stopped_iterated_run_resumes_at_its_iteration_and_collect_target(tmp_path):
  run = tmp_path / 'iterated'
  proc = start_cli(run, *ITERATED)
  try:
    wait_for(
      lambda: 'iteration 1: collecting until the store holds 2 episodes' in output(proc),
      300,
      'iteration 1 to start',
      proc,
    )
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal.
    wait_exit(proc, timeout=120)
    first = output(proc)
    assert leftover_processes(proc.pid) == [], 'node processes outlived the program'
  finally:
    kill_session(proc)
  final = re.findall(r'\[learner\] stopped at step (\d+); final checkpoint', first)
  assert final, first[-3000:]
  step, payload = Checkpointer(run / 'checkpoints').restore_latest()
  assert step == int(final[-1]) >= 40
  # Stopped in iteration 1 (collecting, or inferring on) its target of 2 stored episodes.
  assert (payload['iteration'], payload['collect_target']) == (1, 2), payload
  stored_before = len(EpisodeStore(run / 'store'))
  assert 1 <= stored_before <= 2

  start = time.time()
  proc = start_cli(run, *ITERATED)
  try:
    assert wait_exit(proc, timeout=300) == 0, output(proc)[-5000:]
    second = output(proc)
    assert leftover_processes(proc.pid) == [], 'node processes outlived the program'
  finally:
    kill_session(proc)
  assert f'[learner] resumed from checkpoint at learner step {step}' in second, second[-3000:]
  # The saved position, not iteration 0 nor a target recomputed from the store's size now.
  first_line = re.search(
    r'\[learner\] iteration (\d+): collecting until the store holds (\d+)', second
  )
  assert first_line and first_line.groups() == ('1', '2'), second[-3000:]
  assert 'iteration 0:' not in second
  assert 'all 2 iterations done' in second
  # One episode per iteration, in all: nothing collected twice across the restart.
  assert len(EpisodeStore(run / 'store')) == 2
  step, payload = Checkpointer(run / 'checkpoints').restore_latest()
  assert payload['iteration'] == 2 and step >= 80
  print(f'relaunch took {time.time() - start:.0f} s')
