"""Several tasks in one layout: placement by hand, actors and robots' adder on real replay,
masked networks and the masked trust region."""

import acme
import dm_env
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reverb
from acme import specs, wrappers
from acme.utils import loggers

from agents.common.bodies import Body
from agents.common.errors import ConfigError
from agents.common.task_layout import TaskLayout
from agents.mpo import losses
from agents.mpo.builder import MPOBuilder
from agents.mpo.config import MPOConfig
from agents.replay_pipeline import EXTERNAL_TABLE, REPLAY_TABLE
from environments import suite
from networks.mpo import make_mpo_networks
from networks.perceiver import make_perceiver_networks
from tests.fakes import random_episode

CARTPOLE, POINT_MASS, BALANCE = 'cartpole:swingup', 'point_mass:easy', 'cartpole:balance'


def _spec(obs: int, act: int) -> specs.EnvironmentSpec:
  return specs.EnvironmentSpec(
    observations=specs.Array((obs,), np.float32),
    actions=specs.BoundedArray((act,), np.float32, -1.0, 1.0),
    rewards=specs.Array((), np.float32),
    discounts=specs.BoundedArray((), np.float32, 0.0, 1.0),
  )


# cartpole: groups (3, 2), 1 action; point_mass: (2, 2), 2 actions; balance shares cartpole's.
BODIES = {
  CARTPOLE: Body(_spec(5, 1), (3, 2)),
  POINT_MASS: Body(_spec(4, 2), (2, 2)),
  BALANCE: Body(_spec(5, 1), (3, 2)),
}


def test_layout_places_observations_and_actions_by_hand():
  layout = TaskLayout(BODIES)
  assert layout.obs_group_sizes == (3, 2, 2, 2, 3)  # cartpole's, point_mass's, the one-hot
  assert (layout.obs_size, layout.action_size, layout.num_slots) == (12, 3, 2)
  obs = layout.observation(POINT_MASS, np.array([1, 2, 3, 4], np.float32))
  np.testing.assert_array_equal(obs, [0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 1, 0])
  # Same body, same slot: only the one-hot differs.
  np.testing.assert_array_equal(
    layout.observation(BALANCE, np.arange(5.0)), [0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 1]
  )
  np.testing.assert_array_equal(layout.action(POINT_MASS, [0.5, -0.5]), [0, 0.5, -0.5])
  np.testing.assert_array_equal(layout.task_action(POINT_MASS, [9, 0.5, -0.5]), [0.5, -0.5])
  # Leading (time) dimensions are kept.
  assert layout.observation(CARTPOLE, np.zeros((7, 5))).shape == (7, 12)
  np.testing.assert_array_equal(layout.masks.action_masks, [[1, 0, 0], [0, 1, 1], [1, 0, 0]])
  np.testing.assert_array_equal(
    layout.masks.group_masks, [[1, 1, 0, 0, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 1]]
  )
  with pytest.raises(ValueError, match=r'point_mass:easy: observation shape \(5,\)'):
    layout.observation(POINT_MASS, np.zeros(5))
  with pytest.raises(ValueError, match="'walker:walk' is not one of the run's"):
    layout.action('walker:walk', [0.0])
  image = Body(specs.EnvironmentSpec(specs.Array((8, 8, 3), np.uint8), *_spec(1, 1)[1:]))
  with pytest.raises(ConfigError, match='takes state feature vectors'):
    TaskLayout({CARTPOLE: BODIES[CARTPOLE], 'camera:task': image})


def test_layout_places_stored_episodes_or_says_why_not():
  layout = TaskLayout(BODIES)
  rng = np.random.default_rng(0)
  episode = random_episode(rng, 6, obs_shape=(4,), action_shape=(2,), metadata={'task': POINT_MASS})
  native_obs, native_actions = episode.observations.copy(), episode.actions.copy()
  assert layout.place_episode(episode) is None
  assert episode.observations.shape == (7, 12) and episode.actions.shape == (6, 3)
  np.testing.assert_array_equal(episode.observations[:, 5:9], native_obs)
  np.testing.assert_array_equal(episode.observations[:, 10], 1.0)
  np.testing.assert_array_equal(episode.actions[:, 1:], native_actions)
  np.testing.assert_array_equal(episode.actions[:, 0], 0.0)
  other = random_episode(rng, 3, metadata={'task': 'walker:walk'})
  assert "task 'walker:walk' is not one of the run's" in layout.place_episode(other)
  wrong = random_episode(rng, 3, obs_shape=(5,), metadata={'task': POINT_MASS})
  assert 'observations shape (5,) (point_mass:easy has (4,))' in layout.place_episode(wrong)


def _tiny_mpo(**overrides) -> MPOConfig:
  values = dict(
    policy_layer_sizes=(16, 16),
    critic_layer_sizes=(16, 16),
    num_samples=4,
    replay=dict(batch_size=8, min_replay_size=1, samples_per_insert=None),
  )
  values.update(overrides)
  return MPOConfig.from_dict(values)


def test_actor_and_robot_adder_write_placed_transitions_to_real_replay():
  env = suite.make_environment(POINT_MASS, seed=0)
  bodies = {CARTPOLE: BODIES[CARTPOLE], POINT_MASS: Body(specs.make_environment_spec(env))}
  builder = MPOBuilder(_tiny_mpo(), bodies[POINT_MASS].spec, bodies=bodies, task=POINT_MASS)
  assert builder.obs_dim == 5 + 4 + 2 and builder.action_dim == 3
  server = reverb.Server(builder.make_replay_tables(), port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    learner = builder.make_learner(iter(()), logger=loggers.NoOpLogger())
    actor = builder.make_actor(learner, builder.make_adder(client), seed=1)
    env = wrappers.StepLimitWrapper(env, step_limit=20)
    result = acme.EnvironmentLoop(env, actor, logger=loggers.NoOpLogger()).run_episode()
    assert result['episode_length'] == 20
    size = client.server_info()[REPLAY_TABLE].current_size
    # Each item's data: the transition's leaves (observation, action, reward, ...).
    items = [s.data for s in client.sample(REPLAY_TABLE, num_samples=size, emit_timesteps=False)]
    for data in (items[0], items[-1]):
      obs, action = np.asarray(data[0]), np.asarray(data[1])
      assert obs.shape == (11,) and action.shape == (3,)
      np.testing.assert_array_equal(obs[:5], 0.0)  # cartpole's slot
      np.testing.assert_array_equal(obs[9:], [0.0, 1.0])  # point_mass's one-hot
      assert action[0] == 0.0 and np.any(action[1:] != 0.0)
    # An attached robot of the run's task (point_mass) sends its own arrays.
    adder = builder.make_external_adder(client)
    adder.add_first(dm_env.restart(np.full(4, 0.5, np.float32)))
    for t in range(3):
      step = dm_env.transition(np.float32(1.0), np.full(4, t, np.float32), np.float32(1.0))
      adder.add(np.array([0.25, -0.25], np.float32), step)
    adder.reset()
    size = client.server_info()[EXTERNAL_TABLE].current_size
    assert size >= 3
    robot = [s.data for s in client.sample(EXTERNAL_TABLE, num_samples=size, emit_timesteps=False)]
    first = [data for data in robot if np.allclose(np.asarray(data[0])[5:9], 0.5)]
    assert first, "the robot's first state is not in its table, placed"
    np.testing.assert_array_equal(np.asarray(first[0][0])[9:], [0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(first[0][1]), [0.0, 0.25, -0.25])
  finally:
    server.stop()


@pytest.mark.parametrize('network', ['mlp', 'perceiver'])
def test_networks_see_only_the_tasks_own_groups_and_actions(network):
  layout = TaskLayout(BODIES)
  if network == 'mlp':
    nets = make_mpo_networks(3, (8,), (8,), 5, task_masks=layout.masks)
  else:
    nets = make_perceiver_networks(
      3, layout.obs_group_sizes, 5, latent_dim=8, num_latents=2, num_heads=2,
      num_self_attend_blocks=1, task_masks=layout.masks,
    )  # fmt: skip
  obs = layout.observation(POINT_MASS, np.array([[0.3, -0.2, 0.1, 0.5]], np.float32))
  action = np.array([[0.0, 0.4, -0.4]], np.float32)
  key = jax.random.PRNGKey(0)
  policy_params = nets.policy.init(key, obs)
  critic_params = nets.critic.init(key, obs, action)
  mean, std = nets.policy.apply(policy_params, obs)
  # cartpole's action dimension is a fixed N(0, 1) for point_mass.
  assert float(mean[0, 0]) == 0.0 and float(std[0, 0]) == 1.0 and float(std[0, 1]) != 1.0
  np.testing.assert_array_equal(nets.action_mask(obs), [[0.0, 1.0, 1.0]])
  q = nets.critic.apply(critic_params, obs, action)
  other_action = action.copy()
  other_action[0, 0] = 0.9
  np.testing.assert_array_equal(nets.critic.apply(critic_params, obs, other_action), q)
  assert not np.allclose(nets.critic.apply(critic_params, obs, action * 0.5), q)
  if network == 'perceiver':
    # Garbage in cartpole's slot: the latents attend to point_mass's groups only.
    noisy = obs.copy()
    noisy[0, :5] = [7.0, -3.0, 2.0, 1.0, 5.0]
    np.testing.assert_allclose(nets.critic.apply(critic_params, noisy, action), q, atol=1e-6)
    np.testing.assert_allclose(nets.policy.apply(policy_params, noisy).mean, mean, atol=1e-6)
    changed = obs.copy()
    changed[0, 5] = 2.0  # point_mass's own value matters
    assert not np.allclose(nets.critic.apply(critic_params, changed, action), q)


def test_masked_kl_averages_each_dimension_over_the_states_that_have_it():
  # Two states: the first has dimensions 0 and 1, the second dimension 1 only.
  mask = jnp.array([[1.0, 1.0], [0.0, 1.0]])
  kl = jnp.array([[0.2, 0.4], [0.0, 0.8]])
  np.testing.assert_allclose(losses._mean_over_batch(kl, mask), [0.2, 0.6])
  np.testing.assert_allclose(losses._mean_over_batch(kl), [0.1, 0.6])
  # A dimension no state has: 0, not a division by zero.
  np.testing.assert_allclose(losses._mean_over_batch(kl, mask * jnp.array([0.0, 1.0])), [0, 0.6])
