"""dm_control.manipulation's *_features tasks in state runs, and their evaluations' success."""

import dm_env
import numpy as np
import pytest
import reverb

from environments import success
from environments.suite import make_environment, observation_group_sizes
from launch import experiment
from launch.nodes.counter import PersistentCounter
from launch.nodes.evaluator import EvaluatorWorker
from launch.nodes.learner import LearnerWorker
from tests.fakes import tiny_config

REACH = 'manipulation:reach_site_features'


def test_a_features_task_is_one_float32_vector_of_its_flattened_readings():
  env = make_environment(REACH, seed=3)
  raw = env.environment.environment.environment.environment  # under acme's three wrappers
  readings = raw.reset().observation
  # Sorted key order, each reading flattened: the [1, 6, 2] joint positions are 12 values.
  assert observation_group_sizes(REACH) == tuple(readings[k].size for k in sorted(readings))
  assert observation_group_sizes(REACH) == (3, 3, 3, 9, 12, 6, 6, 3)
  spec = env.observation_spec()
  assert spec.shape == (45,) and spec.dtype == np.float32
  first = make_environment(REACH, seed=3).reset().observation
  joints = sum(observation_group_sizes(REACH)[:4])
  np.testing.assert_allclose(first[joints : joints + 12], readings['jaco_arm/joints_pos'].ravel())
  assert not np.array_equal(first, make_environment(REACH, seed=4).reset().observation)
  timestep = env.step(np.zeros(env.action_spec().shape, np.float32))
  assert timestep.observation.shape == (45,) and np.all(np.isfinite(timestep.observation))
  assert 0.0 <= timestep.reward <= 1.0


def test_a_vision_task_in_a_state_run_is_refused_naming_its_twin():
  with pytest.raises(ValueError, match='run it with --pixels or manipulation:reach_site_features'):
    make_environment('manipulation:reach_site_vision')
  with pytest.raises(ValueError, match='unknown manipulation task'):
    make_environment('manipulation:juggle_features')


def _timestep(reward, kind=dm_env.StepType.MID):
  return dm_env.TimeStep(kind, reward, 1.0, np.zeros(2))


@pytest.mark.parametrize(
  'rewards, repeat, expected',
  [
    ([0.2, 0.995, 0.3], 1, 1.0),  # reached once: a success, though it did not stay
    ([0.2, 0.98, 0.3], 1, 0.0),
    ([0.2, 0.995, 0.3], 2, 0.0),  # two environment steps an action: 1.98 needed
    ([1.0, 2.0, 1.5], 2, 1.0),
  ],
)
def test_success_is_some_step_reaching_the_goal_reward(rewards, repeat, expected):
  observer = success.SuccessObserver(action_repeat=repeat)
  observer.observe_first(None, dm_env.restart(np.zeros(2)))
  for reward in rewards:
    observer.observe(None, _timestep(reward), np.zeros(1))
  assert observer.get_metrics() == {'success': expected}
  observer.observe_first(None, dm_env.restart(np.zeros(2)))  # a new episode forgets
  assert observer.get_metrics() == {'success': 0.0}


def test_the_evaluator_logs_a_manipulation_tasks_success_rate(tmp_path):
  assert success.has_success(REACH) and not success.has_success('cartpole:swingup')
  cfg = tiny_config(tmp_path / 'run', task=REACH, eval_episodes=2, eval_gifs=False)
  tables = experiment.make_builder(cfg).make_replay_tables()
  server = reverb.Server(tables, port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    counter = PersistentCounter(str(tmp_path / 'run'))
    learner = LearnerWorker(cfg.to_dict(), client, counter)
    evaluator = EvaluatorWorker(cfg.to_dict(), learner, counter, client)
    evaluator.evaluate()
  finally:
    server.stop()
  rows = (tmp_path / 'run' / 'logs' / 'evaluator' / 'logs.csv').read_text().splitlines()
  header, row = rows[0].split(','), rows[1].split(',')
  assert 'success_rate' in header and 'mean_score' not in header  # no expert reference yet
  rate = float(row[header.index('success_rate')])
  # An untrained arm rarely touches a 5 cm target: whichever it did, a fraction of 2 episodes.
  assert rate in (0.0, 0.5, 1.0)
  assert -1e-6 <= float(row[header.index('mean_return')]) <= 250.0  # 250 steps of reward <= 1
