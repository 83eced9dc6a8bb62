"""The ensemble dynamics model learns a known linear system, and the planner uses it.

(agents.planning.learning, agents.planning.model_step, with agents.planning.planner.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.planning import learning
from agents.planning.model_step import make_model_step
from agents.planning.planner import PlannerConfig, make_planner, shift_plan
from networks import dynamics

# x' = A x + B a: a slow rotation, fully actuated; reward -|x' - goal|^2.
A = np.array([[1.0, 0.1], [-0.1, 1.0]], np.float32)
B = np.array([[0.5, 0.0], [0.0, 0.5]], np.float32)
GOAL = np.array([0.8, -0.6], np.float32)
SIZES = dynamics.EnsembleSizes(num_members=3, obs_dim=2, hidden_sizes=(32, 32))


def linear_system(obs, action):
  next_obs = obs @ A.T + action @ B.T
  return next_obs, -jnp.sum((next_obs - GOAL) ** 2, axis=-1)


def _transitions(n, seed):
  rng = np.random.default_rng(seed)
  obs = rng.uniform(-2, 2, (n, 2)).astype(np.float32)
  action = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
  next_obs, reward = (np.asarray(x) for x in linear_system(obs, action))
  return obs, action, next_obs, reward


@functools.lru_cache(maxsize=None)
def _trained(steps=600, batch_size=64):
  """An ensemble trained on 2000 random transitions, each member on its own bootstrap."""
  obs, action, next_obs, reward = _transitions(2000, seed=0)
  model = dynamics.make_ensemble(SIZES)
  optimizer = learning.make_optimizer(3e-3)
  stats = dynamics.stats_from_transitions(obs, action, next_obs, reward)
  state = learning.initial_state(model, optimizer, stats, jax.random.PRNGKey(0))
  data = learning.TransitionBatch(obs, action, reward, next_obs, np.ones(len(obs), np.float32))
  data = jax.tree_util.tree_map(jnp.asarray, data)
  update = learning.make_update_fn(model, optimizer)

  @jax.jit
  def train(state, key):
    def body(state, key):
      idx = learning.bootstrap_indices(key, SIZES.num_members, len(obs), batch_size)
      return update(state, jax.tree_util.tree_map(lambda x: x[idx], data))

    return jax.lax.scan(body, state, jax.random.split(key, steps))

  state, metrics = train(state, jax.random.PRNGKey(1))
  return model, state, metrics


def test_the_ensemble_fits_a_known_linear_system():
  model, state, metrics = _trained()
  assert int(state.steps) == 600
  losses = np.asarray(metrics['model_loss'])
  assert np.all(np.isfinite(losses)) and losses[-50:].mean() < losses[:50].mean() - 10.0
  obs, action, next_obs, reward = _transitions(500, seed=1)  # Held out.
  raw = dynamics.to_raw(model.apply(state.params, obs, action, state.stats), state.stats)
  predicted = obs + raw.delta_mean  # [E, N, 2]
  for e in range(SIZES.num_members):
    assert np.sqrt(np.mean((predicted[e] - next_obs) ** 2)) < 0.05  # About 0.005 seen.
    assert np.sqrt(np.mean((raw.reward_mean[e] - reward) ** 2)) < 0.15 * reward.std()  # 3-7% seen


PLANNER = PlannerConfig(
  action_minimum=(-1.0, -1.0),
  action_maximum=(1.0, 1.0),
  horizon=3,
  num_candidates=128,
  iterations=4,
  num_elites=12,
)


def known_reward(obs, action, next_obs):
  del obs, action
  return -jnp.sum((next_obs - GOAL) ** 2, axis=-1)


# The learned reward head is off by a few percent of the reward's spread (see the fit
# test), which moves its optimum about 0.15 from the goal here; the known reward, applied
# to the predicted states, is limited only by the dynamics' error and CEM's search. Hence
# the per-task choice of reward source. CEM's search differs with its key, and with a
# host's rounding, so the test takes the median over 8 keys: from a start 1.0 from the
# goal, 0.015-0.072 (median 0.04) with the known reward and 0.11-0.21 (median 0.17) with
# the head over 12 keys on one host; one key alone failed 0.06 on another.
@pytest.mark.parametrize(
  'propagation,reward_fn,tolerance',
  [('particles', known_reward, 0.06), ('mean', known_reward, 0.06), ('particles', None, 0.25)],
)
def test_planning_with_the_trained_ensemble_reaches_the_goal_of_the_true_system(
  propagation, reward_fn, tolerance
):
  model, state, _ = _trained()
  model_step = make_model_step(model, state.params, state.stats, propagation, reward_fn)
  plan = jax.jit(make_planner(model_step.step, PLANNER, 'cem'))
  distances = []
  for seed in range(8):
    obs, previous, key = np.zeros(2, np.float32), None, jax.random.PRNGKey(seed)
    for _ in range(5):  # Replanning every step, warm-started, on the TRUE system.
      key, sub = jax.random.split(key)
      result = plan(model_step.initial_state(obs), sub, previous)
      assert np.all(np.abs(result.action) <= 1.0)
      obs = np.asarray(linear_system(obs, np.asarray(result.action))[0])
      previous = shift_plan(result.plan, PLANNER)
    distances.append(float(np.linalg.norm(obs - GOAL)))
  assert np.median(distances) < tolerance, distances


def test_particles_keep_one_state_per_member_and_a_known_reward_replaces_the_head():
  model, state, _ = _trained()
  particles = make_model_step(model, state.params, state.stats)
  x = particles.initial_state(np.array([0.3, 0.1], np.float32))
  assert x.shape == (SIZES.num_members, 2)
  next_x, reward = particles.step(x, jnp.array([0.2, -0.4]))
  assert next_x.shape == (SIZES.num_members, 2) and reward.shape == ()
  true_next, true_reward = linear_system(x[0], np.array([0.2, -0.4], np.float32))
  np.testing.assert_allclose(next_x, np.broadcast_to(true_next, (3, 2)), atol=0.03)
  np.testing.assert_allclose(reward, true_reward, atol=0.25)  # The head: see above.
  seven = make_model_step(model, state.params, state.stats, 'mean', lambda o, a, n: 7.0 + 0 * n[0])
  assert float(seven.step(x[0], jnp.zeros(2))[1]) == 7.0
  with pytest.raises(ValueError, match='valid: particles, mean'):
    make_model_step(model, state.params, state.stats, 'random')
