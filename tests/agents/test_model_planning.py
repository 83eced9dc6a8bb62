"""The ensemble dynamics model learns a known linear system, and the planner uses it.

(agents.planning.learning, agents.planning.model_step)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from agents.planning import learning
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
