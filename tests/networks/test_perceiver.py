"""Tests for the Perceiver actor-critic (networks.perceiver) and critic broadcasting.

Most tests run on randomised parameters: the heads start with ~1e-5 weights, so
freshly initialised outputs are nearly constant and an equality between two
calls would hold whatever the networks computed.
"""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from acme import types

from agents.mpo import learning
from agents.common.replay_config import ReplayConfig
from agents.mpo.config import MPOConfig
from networks.mpo import MPONetworks, critic_batch_shape, make_mpo_networks
from environments.suite import obs_group_sizes_from_spec
from networks.perceiver import PerceiverEncoder, make_perceiver_networks

# Two groups of the same size, so that their values can be swapped.
GROUPS = (3, 1, 3)
OBS_DIM = sum(GROUPS)
ACTION_DIM = 2
BATCH = 5
NUM_SAMPLES = 3
TINY = dict(latent_dim=8, num_latents=4, num_heads=2, num_self_attend_blocks=1)


def _compiled(fn):
  # One unoptimised compilation is far cheaper than eager op-by-op dispatch (~ a compilation
  # per op and shape) on a small, busy machine.
  return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0})


def _jitted(nets: MPONetworks) -> MPONetworks:
  return MPONetworks(
      policy=hk.Transformed(_compiled(nets.policy.init), _compiled(nets.policy.apply)),
      critic=hk.Transformed(_compiled(nets.critic.init), _compiled(nets.critic.apply)),
      action_dim=nets.action_dim)


def _build(kind: str, num_atoms: int = 7, groups=GROUPS) -> MPONetworks:
  if kind == 'perceiver':
    return _jitted(make_perceiver_networks(ACTION_DIM, groups, num_atoms=num_atoms, **TINY))
  return _jitted(make_mpo_networks(ACTION_DIM, (8, 8), (8, 8), num_atoms=num_atoms))


# Tests share networks (and so their compiled functions) and data of fixed shapes: on two
# busy cores compilation, not computation, is what a test of these networks costs.
_networks = functools.lru_cache(maxsize=None)(_build)


def _data():
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32)
  actions = rng.uniform(-1, 1, size=(NUM_SAMPLES, BATCH, ACTION_DIM)).astype(np.float32)
  return obs, actions


@functools.lru_cache(maxsize=None)
def _fresh_params(kind: str, num_atoms: int = 7):
  nets = _networks(kind, num_atoms)
  obs, actions = _data()
  return (jax.device_get(nets.policy.init(jax.random.PRNGKey(0), obs)),
          jax.device_get(nets.critic.init(jax.random.PRNGKey(1), obs, actions[0])))


def _randomise(params, seed: int):
  """Every parameter moved by noise: outputs of order one that depend on everything."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda x: (x + 0.5 * rng.normal(size=x.shape)).astype(np.float32), params)


@functools.lru_cache(maxsize=None)
def _params(kind: str, num_atoms: int = 7):
  policy_params, critic_params = _fresh_params(kind, num_atoms)
  return _randomise(policy_params, 2), _randomise(critic_params, 3)


# ---------------------------------------------------------------------------
# Shapes and broadcasting.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('num_atoms', [7, 1])
def test_output_shapes(num_atoms):
  nets = _networks('perceiver', num_atoms)
  policy_params, critic_params = _params('perceiver', num_atoms)
  obs, actions = _data()

  mean, stddev = nets.policy.apply(policy_params, obs)
  assert mean.shape == stddev.shape == (BATCH, ACTION_DIM)
  assert np.all(np.asarray(stddev) > 0)

  atoms = (num_atoms,) if num_atoms > 1 else ()
  assert nets.critic.apply(critic_params, obs, actions[0]).shape == (BATCH,) + atoms
  assert nets.critic.apply(critic_params, obs, actions).shape == (NUM_SAMPLES, BATCH) + atoms
  tiled = np.broadcast_to(obs, (NUM_SAMPLES,) + obs.shape)
  assert nets.critic.apply(critic_params, tiled, actions).shape == (NUM_SAMPLES, BATCH) + atoms


def test_fresh_networks_start_like_the_mlp_ones():
  # The MLP networks' heads: stddev init_stddev (0.7), near-zero mean and logits.
  nets = _networks('perceiver', 7)
  policy_params, critic_params = _fresh_params('perceiver', 7)
  obs, actions = _data()
  mean, stddev = nets.policy.apply(policy_params, obs)
  np.testing.assert_allclose(stddev, 0.7, atol=0.02)
  assert np.max(np.abs(mean)) < 0.05
  assert np.max(np.abs(nets.critic.apply(critic_params, obs, actions))) < 1e-2


@pytest.mark.parametrize('kind', ['perceiver', 'mlp'])
@pytest.mark.parametrize('num_atoms', [7, 1])
def test_broadcast_critic_call_equals_the_tiled_call(kind, num_atoms):
  nets = _networks(kind, num_atoms)
  _, params = _params(kind, num_atoms)
  obs, actions = _data()
  broadcast = np.asarray(nets.critic.apply(params, obs, actions))
  tiled = np.asarray(nets.critic.apply(params, np.broadcast_to(obs, (NUM_SAMPLES,) + obs.shape),
                                       actions))
  assert broadcast.shape == (NUM_SAMPLES, BATCH) + ((num_atoms,) if num_atoms > 1 else ())
  np.testing.assert_allclose(broadcast, tiled, rtol=1e-5, atol=1e-5)
  # The comparison means something only if the output depends on the action and the obs.
  assert np.mean(np.std(broadcast, axis=0)) > 1e-2
  assert np.mean(np.std(broadcast, axis=1)) > 1e-2


@pytest.mark.parametrize('kind', ['perceiver', 'mlp'])
def test_critic_values_actions_beyond_the_box_as_its_boundary(kind):
  # The environment clips actions to [-1, 1]; a critic that extrapolates past the box
  # makes the E-step prefer far-out samples and the policy's spread grow.
  nets = _networks(kind, 7)
  _, params = _params(kind, 7)
  obs, actions = _data()
  far = actions[0].copy()
  far[:, 0] = np.where(np.arange(BATCH) % 2 == 0, 1.7, -3.0)
  boundary = np.clip(far, -1.0, 1.0)
  np.testing.assert_array_equal(nets.critic.apply(params, obs, far),
                                nets.critic.apply(params, obs, boundary))

  def q_sum(action):
    return jnp.sum(jax.nn.softmax(nets.critic.apply(params, obs, action)) * jnp.arange(7.0))

  grad_far = np.asarray(jax.grad(q_sum)(jnp.asarray(far)))
  grad_inside = np.asarray(jax.grad(q_sum)(jnp.asarray(actions[0])))
  assert np.all(grad_far[:, 0] == 0.0)  # flat past the boundary
  assert np.all(np.abs(grad_far[:, 1]) > 0.0)  # the in-box dimension still matters
  assert np.all(np.abs(grad_inside) > 0.0)


def test_unclipped_critic_extrapolates_past_the_box():
  nets = _jitted(make_mpo_networks(ACTION_DIM, (8, 8), (8, 8), num_atoms=7, action_bound=None))
  _, params = _params('mlp', 7)
  obs, actions = _data()
  far = actions[0].copy()
  far[:, 0] = 1.7
  assert not np.allclose(nets.critic.apply(params, obs, far),
                         nets.critic.apply(params, obs, np.clip(far, -1.0, 1.0)))


@pytest.mark.parametrize('kind', ['perceiver', 'mlp'])
def test_critic_broadcasts_over_several_sample_dimensions(kind):
  nets = _networks(kind, 7)
  _, params = _params(kind, 7)
  obs, actions = _data()
  # [2, N, B, A]: e.g. two sets of N samples per observation.
  stacked = np.stack([actions, -actions])
  out = np.asarray(nets.critic.apply(params, obs, stacked))
  assert out.shape == (2, NUM_SAMPLES, BATCH, 7)
  for i in range(2):  # each set scored as a call with one sample dimension would score it
    np.testing.assert_allclose(out[i], nets.critic.apply(params, obs, stacked[i]),
                               rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(out[0] - out[1])) > 1e-2


@pytest.mark.parametrize('kind', ['perceiver', 'mlp'])
def test_critic_rejects_batches_that_do_not_broadcast(kind):
  nets = _networks(kind, 7)
  _, params = _params(kind, 7)
  obs, actions = _data()
  with pytest.raises(ValueError, match=r'observation batch \(5,\).*action batch \(3, 4\)'):
    nets.critic.apply(params, obs, actions[:, :4])
  assert critic_batch_shape((5, 8), (3, 5, 2)) == (3, 5)
  assert critic_batch_shape((3, 5, 8), (3, 5, 2)) == (3, 5)
  assert critic_batch_shape((3, 5, 8), (5, 2)) == (3, 5)


# ---------------------------------------------------------------------------
# Tokens: order, identity, image patches.
# ---------------------------------------------------------------------------


def _permute_encoder_params(params, encoder: str, perm):
  """Parameters of the network built with groups [GROUPS[p] for p in perm]."""
  out = {k: dict(v) for k, v in params.items()}
  for new, old in enumerate(perm):
    out[f'{encoder}/group_{new}'] = params[f'{encoder}/group_{old}']
  out[encoder]['group_embeddings'] = params[encoder]['group_embeddings'][np.asarray(perm)]
  return out


def _permute_obs(obs, perm):
  segments = np.split(obs, np.cumsum(GROUPS)[:-1], axis=-1)
  return np.concatenate([segments[p] for p in perm], axis=-1)


def test_group_order_carries_no_information():
  # Listing the groups in another order, with each group's projection and embedding moved
  # along, computes the same function: attention pools the tokens as a set, and nothing
  # else marks a token's place.
  perm = (1, 2, 0)
  nets = _networks('perceiver', 7)
  permuted_nets = _build('perceiver', 7, groups=tuple(GROUPS[p] for p in perm))
  policy_params, critic_params = _params('perceiver', 7)
  obs, actions = _data()
  permuted_obs = _permute_obs(obs, perm)

  mean, stddev = nets.policy.apply(policy_params, obs)
  p_mean, p_stddev = permuted_nets.policy.apply(
      _permute_encoder_params(policy_params, 'policy_encoder', perm), permuted_obs)
  np.testing.assert_allclose(p_mean, mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(p_stddev, stddev, rtol=1e-5, atol=1e-5)

  q = nets.critic.apply(critic_params, obs, actions)
  p_q = permuted_nets.critic.apply(
      _permute_encoder_params(critic_params, 'critic_encoder', perm), permuted_obs, actions)
  np.testing.assert_allclose(p_q, q, rtol=1e-5, atol=1e-5)
  assert np.mean(np.std(np.asarray(q), axis=1)) > 1e-2  # the output depends on the observation


def test_groups_are_told_apart_by_their_parameters():
  # Swapping the values of the two 3-feature groups, parameters kept, changes the outputs.
  nets = _networks('perceiver', 7)
  policy_params, critic_params = _params('perceiver', 7)
  obs, actions = _data()
  swapped = _permute_obs(obs, (2, 1, 0))
  assert not np.array_equal(swapped, obs)
  mean = np.asarray(nets.policy.apply(policy_params, obs).mean)
  swapped_mean = np.asarray(nets.policy.apply(policy_params, swapped).mean)
  assert np.min(np.abs(mean - swapped_mean)) > 1e-3
  q = np.asarray(nets.critic.apply(critic_params, obs, actions))
  swapped_q = np.asarray(nets.critic.apply(critic_params, swapped, actions))
  assert np.max(np.abs(q - swapped_q)) > 1e-2


def test_image_group_becomes_one_token_per_patch():
  groups = (3, (4, 6, 2))  # a 3-vector, then a 4x6 two-channel image
  patch = 2

  def tokenise(obs):
    return PerceiverEncoder(groups, patch_size=patch, **TINY).tokenise(obs)

  fn = hk.without_apply_rng(hk.transform(tokenise))
  apply = _compiled(fn.apply)
  obs = np.random.default_rng(0).normal(size=(BATCH, 3 + 4 * 6 * 2)).astype(np.float32)
  params = _compiled(fn.init)(jax.random.PRNGKey(1), obs)
  tokens = np.asarray(apply(params, obs))
  assert tokens.shape == (BATCH, 1 + 2 * 3, TINY['latent_dim'])
  # A change of pixel (row 3, column 4, channel 1) reaches exactly the token of its patch:
  # patch (1, 2) of the 2x3 grid, after the vector group's token.
  image = obs[:, 3:].reshape(BATCH, 4, 6, 2).copy()
  image[:, 3, 4, 1] += 1.0
  changed = np.concatenate([obs[:, :3], image.reshape(BATCH, -1)], axis=-1)
  moved = np.max(np.abs(np.asarray(apply(params, changed)) - tokens), axis=(0, 2))
  assert list(np.flatnonzero(moved > 1e-6)) == [1 + 1 * 3 + 2]


@pytest.mark.parametrize('kwargs, message', [
    (dict(obs_group_sizes=(3, (4, 4, 1))), 'patch_size'),
    (dict(obs_group_sizes=(3, (4, 5, 1)), patch_size=2), 'multiples of patch_size'),
    (dict(obs_group_sizes=(3, 0)), 'group sizes'),
    (dict(obs_group_sizes=()), 'at least one'),
    (dict(obs_group_sizes=GROUPS, latent_dim=10, num_heads=4), 'multiple of num_heads'),
    (dict(obs_group_sizes=GROUPS, num_latents=0), 'num_latents'),
])
def test_bad_configurations_fail_at_construction(kwargs, message):
  with pytest.raises(ValueError, match=message):
    make_perceiver_networks(ACTION_DIM, **kwargs)


def test_observation_of_the_wrong_size_is_rejected():
  nets = _networks('perceiver', 7)
  policy_params, _ = _params('perceiver', 7)
  with pytest.raises(ValueError, match='9 features but the groups .* add up to 7'):
    nets.policy.apply(policy_params, np.zeros((1, 9), np.float32))


def test_group_sizes_follow_the_concatenated_observation():
  from acme import wrappers
  from dm_control import suite
  env = suite.load('walker', 'walk', task_kwargs={'random': 0})
  sizes = obs_group_sizes_from_spec(env.observation_spec())
  flat = wrappers.ConcatObservationWrapper(env).reset().observation
  # The same seed again: the same initial state, as the raw observation dict.
  raw = suite.load('walker', 'walk', task_kwargs={'random': 0}).reset().observation
  assert sum(sizes) == flat.shape[0] == 24
  # The wrapper sorts the keys: height (a scalar) first, although the spec lists it second.
  assert list(env.observation_spec()) == ['orientations', 'height', 'velocity']
  assert sizes == (1, 14, 9)
  segments = np.split(flat, np.cumsum(sizes)[:-1])
  for segment, key in zip(segments, sorted(raw)):
    np.testing.assert_array_equal(segment, np.atleast_1d(raw[key]))


# ---------------------------------------------------------------------------
# Cost, gradients, the learner.
# ---------------------------------------------------------------------------


def _flops(fn, *args) -> float:
  # Counted on the lowered program: no compilation needed.
  cost = jax.jit(fn).lower(*args).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def test_critic_encodes_each_observation_once():
  # Each extra sampled action adds one small decoding to the critic's cost, far less than
  # encoding the observation again (which is what a call with tiled observations pays).
  nets = make_perceiver_networks(ACTION_DIM, GROUPS, num_atoms=7, **TINY)
  _, params = _params('perceiver', 7)
  obs, _ = _data()
  encode = hk.without_apply_rng(hk.transform(
      lambda o: PerceiverEncoder(GROUPS, **TINY, name='critic_encoder')(o)))
  encoder_flops = _flops(lambda o: encode.apply(params, o), obs)

  def cost_per_action(tile: bool) -> float:
    costs = []
    for n in (1, 9):
      a = np.zeros((n, BATCH, ACTION_DIM), np.float32)
      o = np.broadcast_to(obs, (n,) + obs.shape) if tile else obs
      costs.append(_flops(lambda o, a: nets.critic.apply(params, o, a), o, a))
    return (costs[1] - costs[0]) / 8

  broadcast, tiled = cost_per_action(tile=False), cost_per_action(tile=True)
  assert broadcast < 0.25 * encoder_flops, (broadcast, encoder_flops)
  # The measurement can tell: with tiled observations each action pays a whole encoding.
  assert tiled > encoder_flops, (tiled, encoder_flops)


def test_gradients_are_finite_and_reach_every_parameter():
  nets = make_perceiver_networks(ACTION_DIM, GROUPS, num_atoms=7, **TINY)
  policy_params, critic_params = _params('perceiver', 7)
  obs, actions = _data()
  weights = np.random.default_rng(4).normal(size=(NUM_SAMPLES, BATCH, 7)).astype(np.float32)

  def policy_objective(params):
    mean, stddev = nets.policy.apply(params, obs)
    return jnp.sum(mean * actions[0]) + jnp.sum(jnp.log(stddev))

  def critic_objective(params):
    return jnp.sum(weights * nets.critic.apply(params, obs, actions))

  for objective, params in ((policy_objective, policy_params),
                            (critic_objective, critic_params)):
    grads = jax.device_get(_compiled(jax.grad(objective))(params))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
      assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
      assert np.any(g != 0), jax.tree_util.keystr(path)


def test_mpo_update_trains_the_perceiver_networks():
  # A one-step bandit with two one-feature groups: terminal transitions and a reward peaked
  # at a = 0.5, so the critic's target is the reward itself.
  config = MPOConfig(num_atoms=11, num_samples=4,
                     replay=ReplayConfig(batch_size=16, discount=0.5),
                     critic_learning_rate=3e-3, target_update_period=5)
  nets = make_perceiver_networks(1, (1, 1), num_atoms=config.num_atoms,
                                 **{**TINY, 'num_self_attend_blocks': 0})
  obs = np.tile(np.array([[0.3, -0.2]], np.float32), (16, 1))
  action = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
  batch = types.Transition(
      observation=obs, action=action,
      reward=(1.0 - (action[:, 0] - 0.5) ** 2 / 2.25).astype(np.float32),
      discount=np.zeros(16, np.float32), next_observation=obs + 1.0)
  state = _compiled(lambda key: learning.initial_state(nets, config, 2, key))(
      jax.random.PRNGKey(0))
  update = _compiled(learning.make_update_fn(nets, config))
  losses = []
  for _ in range(30):
    state, metrics = update(state, batch)
    metrics = jax.device_get(metrics)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    losses.append(float(metrics['critic_loss']))
  assert int(state.steps) == 30
  assert losses[-1] < 0.9 * losses[0], losses
