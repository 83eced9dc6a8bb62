"""The suite tasks' rewards as functions of flat observations (environments.known_rewards)
give what the real environments give."""

import jax
import numpy as np
import pytest

from environments import known_rewards
from environments.suite import make_environment


@pytest.mark.parametrize(
  'task', ['cartpole:swingup', 'cartpole:balance', 'cartpole:swingup@pole_length=0.6']
)
def test_the_cartpole_reward_of_the_observations_is_the_environments(task):
  env = make_environment(task, seed=1)
  rng = np.random.default_rng(0)
  timestep = env.reset()
  obs, actions, next_obs, rewards = [], [], [], []
  for i in range(300):
    # Mostly strong pushes (the pole swings, the cart travels), some at and past the bounds.
    action = np.array([[1.0, -1.0, 1.3][i % 3] if i % 7 == 0 else rng.uniform(-1, 1)], np.float32)
    next_timestep = env.step(action)
    obs.append(timestep.observation)
    actions.append(action)
    next_obs.append(next_timestep.observation)
    rewards.append(next_timestep.reward)
    timestep = next_timestep
  reward_fn, dims = known_rewards.REWARDS['cartpole']
  assert dims == (len(obs[0]), 1)
  predicted = jax.jit(reward_fn)(np.stack(obs), np.stack(actions), np.stack(next_obs))
  assert np.std(rewards) > 0.01  # Not a constant the check could pass by chance.
  np.testing.assert_allclose(predicted, np.asarray(rewards, np.float32), atol=1e-5)


def test_tolerances_by_hand():
  # Gaussian: 1 at 0, exactly value_at_margin (0.1) at the margin; quadratic: 1 - d^2, then 0.
  np.testing.assert_allclose(
    known_rewards.gaussian_tolerance(np.array([0.0, 2.0, -2.0]), 2.0), [1.0, 0.1, 0.1], rtol=1e-6
  )
  np.testing.assert_allclose(
    known_rewards.quadratic_tolerance(np.array([0.0, 0.5, -1.0, 2.0]), 1.0), [1.0, 0.75, 0.0, 0.0]
  )
