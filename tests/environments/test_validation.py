"""Tests for environments.validation on hand-built bad steps and real dm_control episodes."""

import logging
import math

import dm_env
import numpy as np
import pytest
from acme import specs, wrappers

from environments import suite
from environments.validation import (
  EpisodeGate,
  StepError,
  StepValidator,
  ValidatedEpisode,
  collect_episode,
)

OBS_SPEC = specs.BoundedArray((4,), np.float32, -np.inf, np.inf, name='state')
ACTION_SPEC = specs.BoundedArray((2,), np.float32, -1.0, 1.0)
SPEC = specs.EnvironmentSpec(
  observations=OBS_SPEC,
  actions=ACTION_SPEC,
  rewards=specs.Array((), np.float32, name='reward'),
  discounts=specs.BoundedArray((), np.float32, 0.0, 1.0, name='discount'),
)


def _obs(*values) -> np.ndarray:
  return np.array(values or (0.1, 0.2, 0.3, 0.4), np.float32)


def _mid(observation=None, reward=np.float32(0.5), discount=np.float32(1.0)):
  return dm_env.TimeStep(
    dm_env.StepType.MID, reward, discount, _obs() if observation is None else observation
  )


def _action(*values) -> np.ndarray:
  return np.array(values or (0.0, 0.5), np.float32)


@pytest.fixture(name='validator')
def _validator():
  return StepValidator(SPEC)


def test_valid_steps_pass(validator):
  assert validator.check_timestep(dm_env.restart(_obs()), 0) is None
  assert validator.check_timestep(_mid(), 1) is None
  assert validator.check_timestep(dm_env.truncation(np.float32(0.0), _obs()), 2) is None
  assert validator.check_action(_action(-1.0, 1.0), 0) is None
  # Python numbers carry no dtype; a float reward is fine for a float32 spec.
  assert validator.check_timestep(_mid(reward=0.25, discount=1.0), 3) is None


def test_nan_observation_names_element_and_logs(validator, caplog):
  with caplog.at_level(logging.ERROR, logger='collect_infer.validation'):
    error = validator.check_timestep(_mid(_obs(0.1, 0.2, np.nan, 0.4)), 7)
  assert isinstance(error, StepError)
  assert error.field == 'observation[2]'
  assert error.step_index == 7
  assert math.isnan(error.value)
  assert error.reason == 'not finite'
  assert len(caplog.records) == 1
  line = caplog.records[0].getMessage()
  assert 'step 7' in line and 'observation[2] = nan' in line and 'dropping the episode' in line


def test_inf_reward(validator):
  error = validator.check_timestep(_mid(reward=np.float32(np.inf)), 3)
  assert (error.field, error.step_index, error.value, error.reason) == (
    'reward',
    3,
    math.inf,
    'not finite',
  )


def test_wrong_shape_observation(validator):
  error = validator.check_timestep(_mid(np.zeros(5, np.float32)), 1)
  assert error.field == 'observation'
  assert error.value == (5,)
  assert 'shape' in error.reason


def test_wrong_dtype_observation(validator):
  error = validator.check_timestep(_mid(_obs().astype(np.float64)), 1)
  assert error.field == 'observation'
  assert error.value == np.float64
  assert 'dtype' in error.reason


def test_action_errors(validator):
  error = validator.check_action(_action(0.0, 1.5), 4)
  assert (error.field, error.step_index, error.value) == ('action[1]', 4, 1.5)
  assert 'above the maximum 1.0' in error.reason
  error = validator.check_action(_action(-3.0, 0.0), 0)
  assert error.field == 'action[0]' and 'below the minimum -1.0' in error.reason
  error = validator.check_action(_action(np.nan, np.inf), 0)
  assert error.field == 'action[0]' and error.reason == 'not finite (2 elements)'
  assert validator.check_action(np.zeros(3, np.float32), 0).field == 'action'
  assert 'dtype' in validator.check_action(np.zeros(2, np.int32), 0).reason


def test_discount_and_step_type(validator):
  error = validator.check_timestep(_mid(discount=np.float32(-0.5)), 2)
  assert error.field == 'discount' and 'below the minimum' in error.reason
  assert validator.check_timestep(_mid(), 0).field == 'step_type'
  assert validator.check_timestep(dm_env.restart(_obs()), 5).field == 'step_type'
  # Only the FIRST step may leave out its reward.
  assert validator.check_timestep(_mid(reward=None), 2).field == 'reward'


def test_nested_observation_names_path():
  spec = SPEC._replace(
    observations={'joints': specs.Array((3,), np.float32), 'touch': specs.Array((), np.float32)}
  )
  validator = StepValidator(spec)
  good = {'joints': np.zeros(3, np.float32), 'touch': np.float32(0.0)}
  assert validator.check_timestep(_mid(good), 1) is None
  bad = dict(good, joints=np.array([0.0, -np.inf, 0.0], np.float32))
  assert validator.check_timestep(_mid(bad), 1).field == 'observation/joints[1]'
  error = validator.check_timestep(_mid({'joints': good['joints']}), 1)
  assert error.field == 'observation' and 'structure' in error.reason


def _run_gate(on_error: str, bad_step: int, bad_action: bool = False):
  """Feeds a gate a 10-step episode whose step (or action) `bad_step` is NaN."""
  gate = EpisodeGate(StepValidator(SPEC, on_error=on_error))
  assert gate.begin(dm_env.restart(_obs())) is None
  for t in range(10):
    action = _action(0.1 * t, 0.0)
    if bad_action and t == bad_step:
      action[1] = np.nan
    if gate.act(action) is not None:
      break
    observation = _obs(float(t + 1), 0.0, 0.0, 0.0)
    if not bad_action and t + 1 == bad_step:
      observation[3] = np.nan
    timestep = dm_env.truncation(np.float32(1.0), observation) if t == 9 else _mid(observation)
    if gate.observe(timestep) is not None:
      break
  assert gate.done
  return gate.finish(), gate.error


def test_gate_passes_clean_episode_whole():
  episode, error = _run_gate('drop_episode', bad_step=-1)
  assert error is None and not episode.truncated
  assert episode.length == 10
  arrays = episode.as_arrays()
  assert arrays['observations'].shape == (11, 4)
  assert arrays['actions'].shape == (10, 2)
  assert arrays['rewards'].shape == arrays['discounts'].shape == (10,)


def test_gate_drops_episode_with_bad_step():
  episode, error = _run_gate('drop_episode', bad_step=5)
  assert episode is None
  assert (error.field, error.step_index) == ('observation[3]', 5)


def test_gate_truncates_before_bad_observation():
  episode, error = _run_gate('truncate', bad_step=5)
  assert isinstance(episode, ValidatedEpisode) and episode.error == error
  # Steps 0..4 survive; step 4 becomes a truncation and action 4 (which led
  # to the bad step) goes with the bad step.
  assert len(episode.timesteps) == 5 and episode.length == 4
  last = episode.timesteps[-1]
  assert last.step_type == dm_env.StepType.LAST and last.discount == 1.0
  assert last.observation[0] == 4.0
  assert [t.step_type for t in episode.timesteps[:-1]] == (
    [dm_env.StepType.FIRST] + [dm_env.StepType.MID] * 3
  )
  arrays = episode.as_arrays()
  assert np.all(np.isfinite(arrays['observations']))
  assert arrays['actions'][-1][0] == pytest.approx(0.3)


def test_gate_truncates_before_bad_action():
  episode, error = _run_gate('truncate', bad_step=3, bad_action=True)
  assert (error.field, error.step_index) == ('action[1]', 3)
  assert episode.length == 3 and len(episode.timesteps) == 4
  assert episode.timesteps[-1].last() and episode.timesteps[-1].observation[0] == 3.0


def test_gate_drops_truncation_without_a_transition():
  episode, error = _run_gate('truncate', bad_step=1)
  assert episode is None and error.step_index == 1
  episode, error = _run_gate('truncate', bad_step=0, bad_action=True)
  assert episode is None and error.field == 'action[1]'


def test_gate_holds_back_unfinished_episode():
  gate = EpisodeGate(StepValidator(SPEC))
  gate.begin(dm_env.restart(_obs()))
  gate.act(_action())
  gate.observe(_mid())
  assert not gate.done
  assert gate.finish() is None
  with pytest.raises(ValueError, match='on_error'):
    StepValidator(SPEC, on_error='ignore')


class _NanAt(dm_env.Environment):
  """Real dm_control physics whose observation gets a NaN at one step (a faulty sensor)."""

  def __init__(self, env: dm_env.Environment, step: int):
    self._env, self._bad_step, self._t = env, step, 0
    self.actions_received = 0

  def reset(self):
    self._t = 0
    return self._env.reset()

  def step(self, action):
    self.actions_received += 1
    self._t += 1
    timestep = self._env.step(action)
    if self._t == self._bad_step:
      observation = timestep.observation.copy()
      observation[1] = np.nan
      timestep = timestep._replace(observation=observation)
    return timestep

  def observation_spec(self):
    return self._env.observation_spec()

  def action_spec(self):
    return self._env.action_spec()


def _cartpole(step_limit: int) -> dm_env.Environment:
  return wrappers.StepLimitWrapper(
    suite.make_environment('cartpole:swingup', seed=1), step_limit=step_limit
  )


def test_collect_episode_on_real_physics():
  env = _cartpole(step_limit=30)
  spec = specs.make_environment_spec(env)
  rng = np.random.default_rng(0)
  # A Gaussian policy overshoots the bounds; collect_episode clips, as the robot would.
  policy = lambda obs: rng.normal(0.0, 2.0, size=(1,)).astype(np.float32)
  episode, error = collect_episode(env, policy, StepValidator(spec))
  assert error is None and episode.length == 30
  assert np.all(np.abs(episode.as_arrays()['actions']) <= 1.0)

  env = _NanAt(_cartpole(step_limit=30), step=12)
  episode, error = collect_episode(env, policy, StepValidator(spec, on_error='truncate'))
  assert (error.field, error.step_index) == ('observation[1]', 12)
  assert episode.length == 11 and np.all(np.isfinite(episode.as_arrays()['observations']))

  episode, error = collect_episode(env, policy, StepValidator(spec, on_error='drop_episode'))
  assert episode is None and error.step_index == 12

  # A NaN action is caught before the environment gets it.
  env = _NanAt(_cartpole(step_limit=30), step=-1)
  actions = iter([np.zeros(1, np.float32)] * 5 + [np.full(1, np.nan, np.float32)])
  episode, error = collect_episode(
    env, lambda obs: next(actions), StepValidator(spec, on_error='truncate')
  )
  assert error.field == 'action[0]' and error.step_index == 5
  assert env.actions_received == 5 and episode.length == 5
