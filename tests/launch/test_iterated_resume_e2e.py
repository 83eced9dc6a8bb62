"""Iterated collect-and-infer end to end: its iterations, a Ctrl-C mid-way, the resume at the
saved iteration and collect target, and a relaunch of the finished run.
"""

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
  read_counts,
  start_cli,
  wait_exit,
  wait_for,
)
from tests.fakes import TINY

pytestmark = pytest.mark.slow

# Three iterations of two episodes from two actors, stopped with Ctrl-C as iteration 1
# starts: the stop can land a whole iteration late (a loaded machine, the nodes' shutdown)
# and the run is still mid-way.
ITERATIONS, EPISODES = 3, 2
ITERATED = ['--mode', 'iterated', '--iterations', str(ITERATIONS)]
ITERATED += ['--collect_episodes', str(EPISODES), '--infer_steps', '40', '--num_actors', '2']
ITERATED += TINY


def _eval_rows(run_dir) -> int:
  return (run_dir / 'logs' / 'evaluator' / 'logs.csv').read_text().strip().count('\n')


def test_an_iterated_run_stopped_mid_way_resumes_at_its_iteration_and_collect_target(tmp_path):
  run = tmp_path / 'iterated'
  proc = start_cli(run, *ITERATED)
  try:
    wait_for(
      lambda: (
        f'iteration 1: collecting until the store holds {2 * EPISODES} episodes' in output(proc)
      ),
      300,
      'iteration 1 to start',
      proc,
    )
    # Ctrl-C in the terminal (tests/launch/test_program_e2e.py sends SIGTERM to the launcher).
    stopped = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    rc = wait_exit(proc, timeout=30)
    first = output(proc)
    left = leftover_processes(proc.pid, grace=max(0.0, 30 - (time.time() - stopped)))
    assert left == [], f'processes still alive 30 s after Ctrl-C: {left}'
    assert rc in (0, 130), first[-3000:]
  finally:
    kill_session(proc)
  assert f'iteration 0: collecting until the store holds {EPISODES} episodes' in first
  final = re.findall(r'\[learner\] stopped at step (\d+); final checkpoint', first)
  assert final, first[-3000:]
  replay_final = re.search(r'\[replay\] final checkpoint (\S+)', first)
  assert replay_final and os.path.isdir(replay_final.group(1)), first[-3000:]
  step, payload = Checkpointer(run / 'checkpoints').restore_latest()
  assert step == int(final[-1]) >= 40
  # Stopped mid-way: in iteration 1 or 2 (collecting, or inferring on) with its collect
  # target, EPISODES stored episodes per iteration.
  saved = (payload['iteration'], payload['collect_target'])
  assert saved in ((1, 2 * EPISODES), (2, 3 * EPISODES)), payload
  stored_before = len(EpisodeStore(run / 'store'))
  assert saved[1] - EPISODES <= stored_before <= saved[1]

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
  assert first_line and tuple(map(int, first_line.groups())) == saved, second[-3000:]
  assert 'iteration 0:' not in second
  assert f'all {ITERATIONS} iterations done' in second
  # Exactly EPISODES episodes per iteration (each granted by the learner), nothing while
  # the learner infers, and nothing collected twice across the restart.
  assert len(EpisodeStore(run / 'store')) == EPISODES * ITERATIONS
  step, payload = Checkpointer(run / 'checkpoints').restore_latest()
  assert payload['iteration'] == ITERATIONS and step >= 40 * ITERATIONS
  assert read_counts(run)['learner_steps'] >= 40 * ITERATIONS
  # Evaluations fall due every infer_steps learner steps; these iterations are shorter
  # than the evaluator's tick, so only the final one is certain.
  assert _eval_rows(run) >= 1
  print(f'relaunch took {time.time() - start:.0f} s')

  # Relaunched, the finished run says so (its checkpoints carry the iterations done).
  again = start_cli(run, '--mode', 'iterated', '--iterations', str(ITERATIONS))
  try:
    assert wait_exit(again, timeout=120) == 0, output(again)[-3000:]
  finally:
    kill_session(again)
  text = output(again)
  done = f'already reached its budget of {ITERATIONS} iterations ({ITERATIONS} done)'
  assert done in text and '--iterations to continue' in text, text[-3000:]
