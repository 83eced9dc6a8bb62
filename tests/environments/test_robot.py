"""Tests for environments.robot over a real, real-time simulated robot (dm_control cartpole).

Timing assertions allow for a loaded 2-core machine: they check counts and
magnitudes, not milliseconds.
"""

import logging
import time

import dm_env
import numpy as np
import pytest
from acme import specs

from environments.robot import RobotEnvironment
from environments.simulated_robot import SimulatedRobot, make_simulated_robot_env
from environments.validation import StepValidator, collect_episode

HZ = 50.0
PERIOD = 1.0 / HZ


def _run_episode(env: RobotEnvironment, policy, max_steps: int = 10_000):
  """Steps `env` from a reset to LAST; returns the timesteps."""
  timesteps = [env.reset()]
  while not timesteps[-1].last() and len(timesteps) <= max_steps:
    timesteps.append(env.step(policy(timesteps[-1].observation)))
  return timesteps


def _constant(value: float):
  return lambda obs: np.array([value], np.float32)


@pytest.fixture(name='make_env')
def _make_env():
  envs = []

  def make(**kwargs):
    env = make_simulated_robot_env('cartpole:swingup', control_hz=HZ, seed=0, **kwargs)
    envs.append(env)
    return env

  yield make
  for env in envs:
    env.close()


def test_paced_episode_and_step_limit(make_env, caplog):
  env = make_env(max_episode_steps=60, log_every_s=0.4)
  with caplog.at_level(logging.INFO, logger='collect_infer.robot'):
    start = time.monotonic()
    timesteps = _run_episode(env, _constant(0.2))
    elapsed = time.monotonic() - start
  assert len(timesteps) == 61
  last = timesteps[-1]
  assert last.step_type == dm_env.StepType.LAST and last.discount == 1.0
  assert all(t.mid() for t in timesteps[1:-1])
  # 60 periods of 20 ms, in real time.
  assert 1.15 < elapsed < 2.5
  periods = np.array([t.period_s for t in env.step_timings()])
  assert np.median(periods) == pytest.approx(PERIOD, rel=0.2)
  stats = env.timing_stats()
  assert stats.steps == 60 and stats.episodes == 1
  assert stats.period_p50_s == pytest.approx(PERIOD, rel=0.2)
  assert stats.jitter_p50_s < 0.2 * PERIOD
  assert 0 <= stats.jitter_p50_s <= stats.jitter_p90_s <= stats.jitter_p99_s <= stats.jitter_max_s
  # The robot got one command per step (the policy is fast) plus the park command.
  commands = env.robot.sent_commands()
  agent = [c for c in commands if c.action[0] == np.float32(0.2)]
  assert len(agent) == 60 and commands[-1].action[0] == 0.0
  gaps = np.diff([c.time for c in commands])
  assert np.median(gaps) == pytest.approx(PERIOD, rel=0.2)
  # Physics advanced: the cart was pushed to the right.
  assert last.observation[0] > timesteps[0].observation[0] + 0.05
  summaries = [r.getMessage() for r in caplog.records if 'control timing' in r.getMessage()]
  assert len(summaries) >= 2 and 'jitter p50/p90/p99/max' in summaries[0]
  assert any('step limit 60' in r.getMessage() for r in caplog.records)


def test_time_limit_truncates(make_env):
  env = make_env(max_episode_seconds=0.5, max_episode_steps=1000)
  start = time.monotonic()
  timesteps = _run_episode(env, _constant(0.0))
  elapsed = time.monotonic() - start
  assert timesteps[-1].last() and timesteps[-1].discount == 1.0
  assert 0.5 <= elapsed < 2.0
  # 25 ticks in 0.5 s; fewer steps only if a stall skipped ticks.
  assert 5 <= len(timesteps) - 1 <= 25
  # Stepping after LAST starts a new episode, as dm_env requires.
  assert env.step(np.zeros(1, np.float32)).first()


def test_actions_are_clipped_to_spec(make_env, caplog):
  env = make_env(max_episode_steps=3)
  env.reset()
  with caplog.at_level(logging.WARNING, logger='collect_infer.robot'):
    env.step(np.array([3.0], np.float32))
    assert env.last_action.tolist() == [1.0]
    env.step(np.array([-7.0], np.float32))
    env.step(np.array([0.5], np.float32))
  # A loaded machine may slip in watchdog actions (zeros); skip those.
  received = [c.action.tolist() for c in env.robot.sent_commands() if c.action[0] != 0.0]
  assert received[:3] == [[1.0], [-1.0], [0.5]]
  assert env.timing_stats().clipped_actions == 2
  # Rate-limited: one log line for the two clips.
  clip_lines = [r.getMessage() for r in caplog.records if 'Clipped' in r.getMessage()]
  assert len(clip_lines) == 1 and '3.' in clip_lines[0]
  with pytest.raises(ValueError, match='shape'):
    env.reset()
    env.step(np.zeros(2, np.float32))


def test_watchdog_sends_safe_actions_for_slow_policy(make_env):
  env = make_env(action_deadline_s=0.01, max_episode_steps=6)
  steps = 6
  sleep_s = 0.07  # 3.5 periods: the watchdog covers 3 periods per step.

  def slow_policy(obs):
    time.sleep(sleep_s)
    return np.array([0.5], np.float32)

  start = time.monotonic()
  timesteps = _run_episode(env, slow_policy)
  elapsed = time.monotonic() - start
  assert len(timesteps) == steps + 1 and timesteps[-1].last()
  stats = env.timing_stats()
  assert stats.deadline_misses == steps
  # At least 2 periods each step; at most one per period that really passed (a loaded
  # machine oversleeps the policy's sleep, and the watchdog rightly covers that too).
  assert 2 * steps <= stats.watchdog_actions <= elapsed / PERIOD + steps
  assert sum(t.watchdog_actions for t in env.step_timings()) == stats.watchdog_actions
  assert all(t.ticks >= 2 for t in env.step_timings())

  commands = [c for c in env.robot.sent_commands() if start <= c.time]
  sources = ''.join('a' if c.action[0] == np.float32(0.5) else 's' for c in commands)
  assert sources.count('a') == steps
  assert sources.count('s') == stats.watchdog_actions + 1  # Plus the park command.
  assert all(c.applied for c in commands)
  # The robot received safe actions between every two of the slow agent's.
  assert 'aa' not in sources and sources.startswith('s') and sources.endswith('as')
  # About one command per control period, never more (a stalled process
  # sends fewer, so the lower bound is loose).
  assert 0.4 * elapsed / PERIOD <= len(commands) <= elapsed / PERIOD + 2


def test_safety_check_ends_episode_with_safe_action(make_env, caplog):
  def out_of_workspace(obs):
    return f'cart at x={obs[0]:.2f} outside [-0.3, 0.3]' if abs(obs[0]) > 0.3 else None

  env = make_env(safety_check=out_of_workspace, max_episode_steps=400)
  with caplog.at_level(logging.INFO, logger='collect_infer.robot'):
    timesteps = _run_episode(env, _constant(1.0))
  last = timesteps[-1]
  assert last.last() and len(timesteps) - 1 < 400
  assert abs(last.observation[0]) > 0.3
  assert all(abs(t.observation[0]) <= 0.3 for t in timesteps[:-1])
  assert env.timing_stats().safety_stops == 1
  assert env.robot.sent_commands()[-1].action.tolist() == [0.0]
  errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
  assert len(errors) == 1 and 'safety stop' in errors[0] and 'outside [-0.3, 0.3]' in errors[0]


def test_non_finite_action_is_never_sent(make_env):
  env = make_env(max_episode_steps=10)
  env.reset()
  env.step(np.array([0.4], np.float32))
  timestep = env.step(np.array([np.nan], np.float32))
  assert timestep.last() and timestep.discount == 1.0
  assert env.timing_stats().invalid_actions == 1
  assert all(np.all(np.isfinite(c.action)) for c in env.robot.sent_commands())


def test_configuration_errors():
  robot = SimulatedRobot('cartpole:swingup', control_hz=HZ)
  with pytest.raises(ValueError, match='action_deadline_s'):
    RobotEnvironment(robot, control_hz=HZ, action_deadline_s=PERIOD)
  # Cartpole steps its control every 10 ms: 30 Hz cannot run in real time.
  with pytest.raises(ValueError, match='real time'):
    SimulatedRobot('cartpole:swingup', control_hz=30.0)
  assert SimulatedRobot('cartpole:swingup', control_hz=25.0).substeps == 4


def test_validated_collection_over_robot(make_env):
  env = make_env(max_episode_steps=20)
  validator = StepValidator(specs.make_environment_spec(env), on_error='truncate')
  rng = np.random.default_rng(0)
  episode, error = collect_episode(
    env, lambda obs: rng.normal(0.0, 2.0, size=(1,)).astype(np.float32), validator
  )
  assert error is None and episode.length == 20
  arrays = episode.as_arrays()
  assert arrays['observations'].shape == (21, 5) and arrays['observations'].dtype == np.float32
  # Clipped before recording, so the episode holds what the robot executed
  # (a loaded machine may slip watchdog actions, all zeros, in between).
  received = [c.action for c in env.robot.sent_commands() if c.action[0] != 0.0]
  np.testing.assert_array_equal(np.array(received[:20]), arrays['actions'])


def test_schedule_is_absolute_when_policy_takes_time(make_env):
  # A policy that thinks for 40% of a period: on an absolute schedule the
  # period stays 20 ms (a schedule restarted after each reading would make it 28 ms).
  env = make_env(max_episode_steps=40)

  def thinking_policy(obs):
    time.sleep(0.4 * PERIOD)
    return np.zeros(1, np.float32)

  _run_episode(env, thinking_policy)
  periods = [t.period_s for t in env.step_timings() if t.ticks == 1]
  assert len(periods) >= 20
  assert np.median(periods) == pytest.approx(PERIOD, rel=0.15)


def test_simulated_robot_ends_with_its_task_and_never_auto_resets():
  # Unpaced: the robot itself only counts commands. Cartpole's own limit is
  # 1000 steps of 10 ms, i.e. 500 commands at 50 Hz.
  robot = SimulatedRobot('cartpole:swingup', control_hz=HZ, seed=3)
  first = robot.reset()
  for _ in range(499):
    robot.send(np.array([0.3], np.float32))
  reading = robot.read()
  assert reading.discount is None and reading.reward > 0
  robot.send(np.array([0.3], np.float32))
  reading = robot.read()
  assert reading.discount == 1.0
  robot.send(np.zeros(1, np.float32))  # e.g. the park command after the end
  after = robot.read()
  np.testing.assert_array_equal(after.observation, reading.observation)
  assert [c.applied for c in robot.sent_commands()[-2:]] == [True, False]
  assert not np.array_equal(robot.reset(), first)  # a fresh random start
  robot.close()
