"""Fault tests with real processes and real signals: kill -9 of an actor, of every actor, of the
learner, of the replay."""

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
  node_pid,
  output,
  read_counts,
  start_cli,
  wait_exit,
  wait_for,
)
from tests.fakes import TINY

pytestmark = pytest.mark.slow


def test_a_killed_actor_is_restarted_and_the_program_finishes(tmp_path):
  run_dir = tmp_path / 'run'
  proc = start_cli(run_dir, '--max_actor_steps', '6000', *TINY)
  try:
    victim = node_pid(proc, 'actor_1')
    wait_for(
      lambda: read_counts(run_dir).get('actor_steps', 0) >= 1000,
      240,
      'the actors to make progress',
      proc,
    )
    os.kill(victim, signal.SIGKILL)
    wait_for(
      lambda: 'actor/1 died (signal 9); restarted it' in output(proc),
      60,
      'the launcher to report and restart the actor',
      proc,
    )
    wait_for(
      lambda: len(re.findall(r'\[actor_1\] running as pid (\d+)', output(proc))) == 2,
      120,
      'the new actor_1 process',
      proc,
    )
    rc = wait_exit(proc, timeout=400)
    text = output(proc)
    assert rc == 0, text[-5000:]
    assert read_counts(run_dir)['actor_steps'] >= 6000
    # The restarted actor wrote on through its own store writer (torn tail recovered).
    sources = [i.metadata['source'] for i in EpisodeStore(run_dir / 'store').index()]
    assert 'actor_1' in sources and 'actor_0' in sources
    assert leftover_processes(proc.pid) == []
  finally:
    kill_session(proc)


def _kill_9_when_saved(run_dir, proc, node: str) -> None:
  """Waits for two learner checkpoints past the current ones and stored episodes, then kill -9."""
  victim = node_pid(proc, node)
  checkpoints = Checkpointer(run_dir / 'checkpoints')
  newest = max(checkpoints.all_steps(), default=-1)
  stored = len(EpisodeStore(run_dir / 'store'))
  # A checkpoint of the learner and of replay exist once the evaluator has run twice.
  wait_for(
    lambda: (
      len([s for s in checkpoints.all_steps() if s > newest]) >= 2
      and len(EpisodeStore(run_dir / 'store')) >= stored + 2
    ),
    300,
    'two new checkpoints and stored episodes',
    proc,
  )
  os.kill(victim, signal.SIGKILL)
  rc = wait_exit(proc, timeout=120)
  text = output(proc)
  assert rc == 1 and 'error: a node failed' in text, text[-4000:]
  assert leftover_processes(proc.pid) == []


def _check_resumed(run_dir, text: str, last_step: int, before: set) -> None:
  resumed = re.search(r'resumed from checkpoint at learner step (\d+)', text)
  assert resumed and int(resumed.group(1)) == last_step, text[-3000:]
  restored = re.search(r"restored table sizes \{[^}]*'priority_table': (\d+)", text)
  assert restored and int(restored.group(1)) > 0, 'replay was not restored from its checkpoint'
  after = EpisodeStore(run_dir / 'store')
  assert before <= {i.episode_id for i in after.index()}, 'stored episodes were lost'
  for info in after.index():
    after.read(info.episode_id)  # Every stored episode reads back intact.


def test_kill_9_of_the_learner_then_of_replay_each_relaunch_resumes_with_nothing_lost(tmp_path):
  """kill -9 of the learner; relaunch; kill -9 of replay; relaunch: each resume loses nothing.

  One run killed twice (rather than one run per node): a program launch fewer.
  """
  run_dir = tmp_path / 'run'
  proc = start_cli(run_dir, '--max_actor_steps', '100000', *TINY, '--eval_every_seconds', '2')
  try:
    for node in ('learner', 'replay'):
      _kill_9_when_saved(run_dir, proc, node)
      kill_session(proc)
      before = {i.episode_id for i in EpisodeStore(run_dir / 'store').index()}
      last_step = Checkpointer(run_dir / 'checkpoints').all_steps()[-1]
      if node == 'learner':  # Relaunched to run on until replay is killed.
        proc = relaunched = start_cli(run_dir)
        wait_for(
          lambda p=relaunched: all(
            line in output(p) for line in ('resumed from checkpoint', 'restored table')
          ),
          300,
          'the learner and replay to resume',
          relaunched,
        )
        _check_resumed(run_dir, output(relaunched), last_step, before)
    budget = read_counts(run_dir)['actor_steps'] + 1000
    proc = start_cli(run_dir, '--max_actor_steps', str(budget))
    rc = wait_exit(proc, timeout=300)
    text = output(proc)
    assert rc == 0, text[-5000:]
    _check_resumed(run_dir, text, last_step, before)
  finally:
    kill_session(proc)


def _wait_learner_blocked(run_dir, proc, still_for: float = 8.0, timeout: float = 180.0):
  """Waits until the learner's step count stops moving (the counter saves it every 5 s, so
  `still_for` spans at least one save that found it unchanged)."""
  last, since, deadline = None, time.time(), time.time() + timeout
  while time.time() < deadline:
    steps = read_counts(run_dir).get('learner_steps')
    if steps != last:
      last, since = steps, time.time()
    elif time.time() - since >= still_for:
      return
    assert proc.poll() is None, output(proc)[-5000:]
    time.sleep(1)
  raise AssertionError(f'the learner never blocked (learner steps {last}):\n{output(proc)[-3000:]}')


def test_losing_every_actor_stops_a_blocked_learner_within_30s(tmp_path):
  run_dir = tmp_path / 'run'
  proc = start_cli(
    run_dir,
    '--max_actor_steps',
    '10000000',
    '--actor_failures',
    'continue',
    '--num_actors',
    '2',
    *TINY,
  )
  try:
    actors = [node_pid(proc, f'actor_{i}') for i in range(2)]
    wait_for(
      lambda: read_counts(run_dir).get('learner_steps', 0) > 20,
      300,
      'the learner to make progress',
      proc,
    )
    # Frozen actors insert nothing, so the learner uses up its sampling allowance and
    # parks on the rate limiter; only then do the actors vanish for good.
    for pid in actors:
      os.kill(pid, signal.SIGSTOP)
    _wait_learner_blocked(run_dir, proc)
    for pid in actors:
      os.kill(pid, signal.SIGKILL)
    start = time.time()
    # With nothing left to insert, waiting on would be forever: the program stops itself.
    rc = wait_exit(proc, timeout=30)
    text = output(proc)
    left = leftover_processes(proc.pid, grace=max(0.0, 30 - (time.time() - start)))
    assert left == [], f'processes still alive 30 s after the last actor died: {left}'
    assert re.search(
      r'\[launch\] actor/[01] died \(signal 9\)(; actor/[01] died \(signal 9\))? '
      r'and no actor is left: stopping the program',
      text,
    ), text[-5000:]
    assert rc == 1 and 'error: a node failed' in text, text[-3000:]
    final = re.search(r'\[learner\] stopped at step (\d+); final checkpoint', text)
    assert final, text[-5000:]
    assert Checkpointer(run_dir / 'checkpoints').all_steps()[-1] == int(final.group(1))
    assert '[replay] final checkpoint' in text, text[-5000:]
  finally:
    kill_session(proc)
