"""A robot environment written outside the project: specs that match on what matters.

Names and infinite bounds are cosmetic; shapes, dtypes and finite bounds are compared;
a refusal prints the program's whole spec; `adapt_to_program` turns a typical robot
environment (dict observations, float64, actions in its own units) into the program's.
"""

import dm_env
import numpy as np
import pytest
from acme import specs

from environments.adapt import adapt_to_program
from environments.suite import make_environment
from launch.robot import attach
from launch.robot.spec import SpecMismatchError, check_spec_matches, spec_to_data
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from tests.launch.robot.test_attach import _start_program, _stop_program


class PlainRobot(dm_env.Environment):
  """What a newcomer writes: a float32 (5,) reading, float32 actions in [-1, 1], 20 steps."""

  def __init__(self, steps: int = 20):
    self._steps, self._t = steps, 0
    self._rng = np.random.default_rng(0)

  def observation_spec(self):
    return specs.Array((5,), np.float32, name='obs')

  def action_spec(self):
    return specs.BoundedArray((1,), np.float32, -1.0, 1.0, name='torque')

  def _reading(self) -> np.ndarray:
    return self._rng.normal(size=5).astype(np.float32)

  def reset(self):
    self._t = 0
    return dm_env.restart(self._reading())

  def step(self, action):
    self._t += 1
    reward = np.float64(-abs(float(action[0])))  # dm_env's default reward spec: float64.
    if self._t >= self._steps:
      return dm_env.truncation(reward, self._reading())
    return dm_env.transition(reward, self._reading())


def make_plain_robot(steps: int = 20) -> dm_env.Environment:
  return PlainRobot(steps)


class DictRobot(dm_env.Environment):
  """A typical robot: a dict of float64 readings, float64 torques in [-2, 2]."""

  def __init__(self):
    self.last_action = None

  def observation_spec(self):
    return {
      'velocity': specs.Array((2,), np.float64, name='velocity'),
      'position': specs.Array((3,), np.float64, name='position'),
    }

  def action_spec(self):
    return specs.BoundedArray((1,), np.float64, -2.0, 2.0, name='torque')

  def reward_spec(self):
    return specs.Array((), np.float64, name='reward')

  def _reading(self):
    return {'velocity': np.array([4.0, 5.0]), 'position': np.array([1.0, 2.0, 3.0])}

  def reset(self):
    return dm_env.restart(self._reading())

  def step(self, action):
    self.last_action = np.array(action)
    return dm_env.transition(1.0, self._reading())


def _program_spec():
  return spec_to_data(specs.make_environment_spec(make_environment()))


def test_names_and_infinite_bounds_do_not_matter():
  env_spec = spec_to_data(specs.make_environment_spec(PlainRobot()))
  check_spec_matches(_program_spec(), env_spec)  # No error.


def test_a_refusal_names_the_bounds_and_prints_the_programs_spec():
  wide = specs.make_environment_spec(PlainRobot())._replace(
    actions=specs.BoundedArray((1,), np.float32, -2.0, 2.0)
  )
  with pytest.raises(SpecMismatchError) as error:
    check_spec_matches(_program_spec(), spec_to_data(wide))
  lines = str(error.value).splitlines()
  assert lines[0] == (
    "the environment's spec does not match the program's in 2 field(s): "
    'actions.minimum: program -1, environment -2; actions.maximum: program 1, environment 2'
  )
  assert lines[1].startswith("the program's spec (names are not compared")
  assert lines[2:] == [
    '  observations: float32 (5,), unbounded',
    '  actions: float32 (1,), in [-1, 1]',
    '  rewards: float32 ()',
    '  discounts: float32 (), in [0, 1]',
  ]
  # A finite observation bound does matter.
  bounded = specs.make_environment_spec(PlainRobot())._replace(
    observations=specs.BoundedArray((5,), np.float32, -10.0, np.inf)
  )
  with pytest.raises(
    SpecMismatchError, match='observations.minimum: program none, environment -10'
  ):
    check_spec_matches(_program_spec(), spec_to_data(bounded))


def test_adapt_to_program_turns_a_dict_float64_robot_into_the_programs_spec():
  robot = DictRobot()
  env = adapt_to_program(robot)
  check_spec_matches(_program_spec(), spec_to_data(specs.make_environment_spec(env)))
  first = env.reset()
  # Sorted keys: position, then velocity (as the suite's tasks are flattened).
  assert first.observation.dtype == np.float32
  assert first.observation.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
  step = env.step(np.array([0.5], np.float32))
  assert robot.last_action.tolist() == [1.0]  # [-1, 1] scaled to the robot's [-2, 2].
  assert np.asarray(step.reward).dtype == np.float32


@pytest.fixture(name='program', scope='module')
def _program(tmp_path_factory):
  program = _start_program(tmp_path_factory.mktemp('plain') / 'run')
  yield program
  _stop_program(program)


def test_a_plain_robot_attaches_through_the_gateway(program, tmp_path):
  args = attach.parse_args(
    [
      '--gateway',
      program.gateway_address,
      '--token_file',
      str(RunDir(program.run_dir).gateway_token),
      '--env',
      'tests.launch.robot.test_spec_plain:make_plain_robot',
      '--buffer_dir',
      str(tmp_path / 'outbox'),
      '--name',
      'plain1',
      '--max_episodes',
      '1',
      '--connect_timeout_s',
      '20',
    ]
  )
  assert attach.attach(args) == 0
  [info] = [i for i in EpisodeStore(program.store).index() if i.writer == 'external_plain1']
  assert info.length == 20
