"""The budget: when a run is done, and the sentence that says so (no processes)."""

import json

import numpy as np
import pytest

from launch.budget import Budget
from launch.checkpointing import Checkpointer
from launch.config import ExperimentConfig
from launch.local.launcher import _spent_budget
from launch.run_dir import RunDir


def _budget(**fields) -> Budget:
  return Budget.from_config(ExperimentConfig(**fields))


def test_from_config_takes_the_limits():
  b = _budget(mode='online', max_actor_steps=500, max_learner_steps=70, max_seconds=9.5,
              iterations=3)
  assert (b.mode, b.max_actor_steps, b.max_learner_steps, b.max_seconds, b.iterations) == (
      'online', 500, 70, 9.5, 3)


@pytest.mark.parametrize('mode', ['online', 'offline_to_online'])
def test_online_modes_end_at_their_environment_steps(mode):
  b = _budget(mode=mode, max_actor_steps=1000)
  assert b.actor_steps_limit == 1000
  assert not b.done(actor_steps=999, learner_steps=10**6)
  assert b.done(actor_steps=1000)
  assert b.reason(actor_steps=1003) == ('its budget of 1000 environment steps (1003 done); '
                                        'pass a larger --max_actor_steps to continue')


def test_offline_and_iterated_actor_steps_count_toward_nothing():
  offline = _budget(mode='offline', max_actor_steps=10, max_learner_steps=50)
  assert offline.actor_steps_limit is None
  assert not offline.done(actor_steps=10**6, learner_steps=49)
  assert offline.done(learner_steps=50)
  iterated = _budget(mode='iterated', max_actor_steps=10, iterations=2)
  assert iterated.actor_steps_limit is None
  assert not iterated.done(actor_steps=10**6, iterations_done=1)


def test_learner_steps_end_any_non_iterated_mode_first():
  b = _budget(mode='online', max_actor_steps=100, max_learner_steps=40)
  assert b.ends_with_learner
  assert b.learner_finished(40) and not b.learner_finished(39)
  # Both spent: the learner's budget is named (as the launcher always did).
  assert b.reason(actor_steps=100, learner_steps=41) == (
      'its budget of 40 learner steps (41 done); pass a larger --max_learner_steps to continue')
  assert not _budget(mode='online', max_actor_steps=100).ends_with_learner


def test_iterated_mode_ends_with_its_iterations_not_learner_steps():
  b = _budget(mode='iterated', iterations=3, max_learner_steps=5)
  assert b.ends_with_learner
  assert not b.learner_finished(10**6, iterations_done=2)
  assert not b.done(learner_steps=10**6, iterations_done=2)
  assert b.learner_finished(0, iterations_done=3)
  assert b.reason(iterations_done=3) == ('its budget of 3 iterations (3 done); '
                                         'pass a larger --iterations to continue')
  assert b.done(iterations_done=4)  # Resumed with fewer iterations than were done.


def test_seconds_end_every_mode_first():
  for mode, extra in [('online', {}), ('offline', {'max_learner_steps': 9}),
                      ('iterated', {})]:
    b = _budget(mode=mode, max_seconds=30, **extra)
    assert not b.out_of_time(29.9) and b.out_of_time(30)
    assert not b.done(seconds=29.9)
    assert b.reason(seconds=31.2, actor_steps=10**9, learner_steps=10**9) == (
        'its budget of 30 seconds (31 elapsed); pass a larger --max_seconds to continue')
  assert not _budget(max_actor_steps=5).out_of_time(10**9)


def test_the_learners_word_overrides_the_lagging_counter():
  b = _budget(mode='offline', max_learner_steps=50)
  # The counter says 50 but the learner (which flushes its counts first) is not done yet.
  assert not b.done(learner_steps=50, learner_done=False)
  assert b.reason(learner_steps=48, learner_done=True) == (
      'its budget of 50 learner steps (the learner reached it); '
      'pass a larger --max_learner_steps to continue')
  it = _budget(mode='iterated', iterations=2)
  assert not it.done(iterations_done=5, learner_done=False)
  assert 'its budget of 2 iterations (all done)' in it.reason(learner_done=True)
  # Without a learner budget, the learner's word cannot end the run; actor steps still do.
  online = _budget(mode='online', max_actor_steps=100)
  assert not online.done(learner_done=True, actor_steps=99)
  assert online.done(learner_done=False, actor_steps=100)


def _run_dir(tmp_path, counts=None, iteration=None) -> RunDir:
  run = RunDir(tmp_path / 'run')
  run.create()
  if counts is not None:
    (run.path / 'counter.json').write_text(json.dumps({'counts': counts, 'cache': {}}))
  if iteration is not None:
    Checkpointer(run.checkpoints).save(
        {'learner_state': {'w': np.zeros(2)}, 'learner_steps': 7, 'iteration': iteration,
         'collect_target': None}, 7)
  return run


def test_launcher_reports_spent_step_budgets_from_the_counter_file(tmp_path):
  run = _run_dir(tmp_path, counts={'actor_steps': 3000, 'learner_steps': 20})
  cfg = ExperimentConfig(run_dir=str(run.path), max_actor_steps=3000)
  assert _spent_budget(cfg, run) == ('its budget of 3000 environment steps (3000 done); '
                                     'pass a larger --max_actor_steps to continue')
  cfg = ExperimentConfig(run_dir=str(run.path), max_actor_steps=3001)
  assert _spent_budget(cfg, run) is None
  offline = ExperimentConfig(run_dir=str(run.path), mode='offline', max_learner_steps=20)
  assert 'its budget of 20 learner steps (20 done)' in _spent_budget(offline, run)


def test_launcher_without_counts_has_spent_nothing(tmp_path):
  run = _run_dir(tmp_path)
  assert _spent_budget(ExperimentConfig(run_dir=str(run.path), max_actor_steps=1), run) is None
  it = ExperimentConfig(run_dir=str(run.path), mode='iterated', iterations=1)
  assert _spent_budget(it, run) is None


def test_launcher_reports_an_iterated_run_with_all_iterations_done(tmp_path):
  run = _run_dir(tmp_path, counts={'actor_steps': 4000, 'learner_steps': 120}, iteration=2)
  done = ExperimentConfig(run_dir=str(run.path), mode='iterated', iterations=2,
                          max_learner_steps=100)
  assert _spent_budget(done, run) == ('its budget of 2 iterations (2 done); '
                                      'pass a larger --iterations to continue')
  more = ExperimentConfig(run_dir=str(run.path), mode='iterated', iterations=3,
                          max_learner_steps=100)
  # Learner steps past max_learner_steps do not end an iterated run (nor did they in the program).
  assert _spent_budget(more, run) is None
