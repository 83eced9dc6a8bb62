"""The image encoder, DrQ's random shift, and MPO's pixel networks with a shared encoder."""

import dataclasses
import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from acme import types
from acme.specs import EnvironmentSpec
from dm_env import specs

from agents.bc import learning as bc_learning
from agents.bc.builder import BCBuilder
from agents.bc.config import BCConfig
from agents.mpo import learning
from agents.mpo.config import MPOConfig
from networks.augment import random_shift, shift_images
from networks.encoder import FEATURES, PIXELS, ConvEncoder, scale_pixels
from networks.pixel_mpo import make_pixel_mpo_networks

SIZE = 16
OBS_SPEC = specs.BoundedArray((SIZE, SIZE, 6), np.uint8, 0, 255)
IMAGE = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)  # rows 1 2 3 / 4 5 6 / 7 8 9


def test_scale_pixels():
  np.testing.assert_allclose(scale_pixels(jnp.array([0, 51, 255], jnp.uint8)), [-0.5, -0.3, 0.5])


@pytest.mark.parametrize(
  'offset, expected',
  [
    ((1, 1), [[1, 2, 3], [4, 5, 6], [7, 8, 9]]),  # the centre: unchanged
    ((0, 0), [[1, 1, 2], [1, 1, 2], [4, 4, 5]]),  # content moves down-right, edges repeat
    ((2, 1), [[4, 5, 6], [7, 8, 9], [7, 8, 9]]),  # content moves up one row
  ],
)
def test_shift_images_hand_computed(offset, expected):
  shifted = shift_images(jnp.asarray(IMAGE), jnp.array([offset]), pad=1)
  assert shifted.dtype == jnp.uint8
  np.testing.assert_array_equal(shifted[0, :, :, 0], expected)


def test_random_shift_shifts_each_image_within_pad():
  images = jnp.asarray(np.tile(IMAGE, (64, 1, 1, 1)))
  shifted = np.asarray(random_shift(jax.random.PRNGKey(0), images, pad=1))
  # Every result is one of the 9 crops, and the batch holds more than one of them.
  crops = {
    shift_images(jnp.asarray(IMAGE), jnp.array([(r, c)]), 1).tobytes()
    for r in range(3)
    for c in range(3)
  }
  assert all(s[None].tobytes() in crops for s in shifted)
  assert len({s.tobytes() for s in shifted}) > 1
  assert random_shift(jax.random.PRNGKey(0), images, pad=0) is images


def _random_batch(seed: int = 0) -> types.Transition:
  """8 random images with random actions and rewards; the next images are the batch's own,
  rolled by one."""
  rng = np.random.default_rng(seed)
  obs = rng.integers(0, 256, (8, SIZE, SIZE, 6), dtype=np.uint8)
  return types.Transition(
    observation=obs,
    action=rng.uniform(-1, 1, (8, 2)).astype(np.float32),
    reward=rng.uniform(0, 1, 8).astype(np.float32),
    discount=np.full(8, 0.99, np.float32),
    next_observation=np.roll(obs, 1, axis=0),
  )


@pytest.fixture(scope='module')
def pixel_setup():
  networks = make_pixel_mpo_networks(
    2, (16,), (16,), num_atoms=11, channels=(4,), blocks=1, feature_dim=8, shift_pad=2
  )
  # PAC: the MPO update plus behaviour cloning of the batch's actions.
  config = MPOConfig(
    policy_layer_sizes=(16,),
    critic_layer_sizes=(16,),
    num_atoms=11,
    num_samples=4,
    policy_loss='pac',
  )
  state = learning.initial_state(networks, config, OBS_SPEC, jax.random.PRNGKey(0))
  return networks, config, state, _random_batch()


def _encoder_leaves(params):
  return {k: v for k, v in params.items() if k.startswith('encoder')}


def test_encoder_shapes_and_sizes_settable():
  def apply(images):
    return ConvEncoder(channels=(4, 8), blocks=1, feature_dim=5)(images)

  model = hk.without_apply_rng(hk.transform(apply))
  images = jnp.zeros((3, 2, SIZE, SIZE, 3), jnp.uint8)  # two batch dimensions
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)  # shapes, nothing run
  assert jax.eval_shape(model.apply, params, images).shape == (3, 2, 5)
  assert params['encoder/linear']['w'].shape == (4 * 4 * 8, 5)  # 16 -> 8 -> 4 pixels
  convs = sorted(k for k in params if 'conv' in k)
  assert len(convs) == 2 + 2 * 2  # per stage a strided conv and one block of two


def test_policy_loss_leaves_encoder_alone(pixel_setup):
  networks, _, state, batch = pixel_setup
  obs = jnp.asarray(batch.observation)
  assert _encoder_leaves(state.policy_params)  # the policy reads an encoder...
  # ...the critic's own, from the start.
  for k, v in _encoder_leaves(state.policy_params).items():
    jax.tree_util.tree_map(np.testing.assert_array_equal, v, state.critic_params[k])

  def policy_objective(params):
    mean, std = networks.policy.apply(params, obs)
    return jnp.sum(mean**2) + jnp.sum(std)

  grads = jax.jit(jax.grad(policy_objective))(state.policy_params)
  enc = jax.tree_util.tree_leaves(_encoder_leaves(grads))
  assert enc and all(np.all(np.asarray(g) == 0) for g in enc)
  rest = jax.tree_util.tree_leaves({k: v for k, v in grads.items() if not k.startswith('encoder')})
  assert any(np.any(np.asarray(g) != 0) for g in rest)


def test_update_trains_encoder_and_shares_it_with_the_policy(pixel_setup):
  networks, config, state, batch = pixel_setup
  update = jax.jit(learning.make_update_fn(networks, config))
  new, metrics = update(state, batch)
  assert np.isfinite(float(metrics['critic_loss']))
  before = _encoder_leaves(state.critic_params)
  after = _encoder_leaves(new.critic_params)
  moved = [
    not np.array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after))
  ]
  assert any(moved)  # the critic's loss trains the encoder
  for k, v in _encoder_leaves(new.policy_params).items():
    jax.tree_util.tree_map(np.testing.assert_array_equal, v, new.critic_params[k])
  # The critic sees N sampled actions per image without N copies of the image.
  q = networks.critic.apply(new.critic_params, batch.observation, jnp.zeros((4, 8, 2)))
  assert q.shape == (4, 8, 11)


@pytest.mark.parametrize('with_features', [False, True])
def test_encoding_once_an_update_changes_no_result(pixel_setup, with_features):
  """The learner encodes each batch once per parameter set (networks.encode): three encoder
  passes instead of eight. Over updates where the targets lag the online networks and then
  catch up, it gives the states that encoding inside every network call gives."""
  networks, config, _, batch = pixel_setup
  config = dataclasses.replace(config, target_update_period=2)
  spec = OBS_SPEC
  if with_features:  # an image with the task's state features beside it
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(8, 3)).astype(np.float32)
    batch = batch._replace(
      observation={FEATURES: feats, PIXELS: batch.observation},
      next_observation={FEATURES: np.roll(feats, 1, axis=0), PIXELS: batch.next_observation},
    )
    spec = {FEATURES: specs.Array((3,), np.float32), PIXELS: OBS_SPEC}
  state = learning.initial_state(networks, config, spec, jax.random.PRNGKey(2))
  assert networks.encode is not None
  per_call = dataclasses.replace(networks, encode=None)
  results = []
  for nets in (networks, per_call):
    update, s = jax.jit(learning.make_update_fn(nets, config)), state
    for _ in range(3):
      s, metrics = update(s, batch)
    results.append((s, metrics))
  (once, m_once), (each, m_each) = results
  assert int(once.steps) == 3
  # The targets were copied at step 2 and the online networks moved on at step 3.
  assert not np.array_equal(
    once.critic_params['encoder/linear']['w'], once.target_critic_params['encoder/linear']['w']
  )
  close = functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=2e-6)
  jax.tree_util.tree_map(close, once, each)
  jax.tree_util.tree_map(close, m_once, m_each)


def test_bc_trains_its_own_encoder(pixel_setup):
  _, _, _, batch = pixel_setup
  spec = EnvironmentSpec(
    observations=OBS_SPEC,
    actions=specs.BoundedArray((2,), np.float32, -1, 1),
    rewards=specs.Array((), np.float32),
    discounts=specs.BoundedArray((), np.float32, 0, 1),
  )
  config = BCConfig(policy_layer_sizes=(16,), encoder=dict(channels=(4,), feature_dim=8))
  builder = BCBuilder(config, spec)
  networks = builder.make_networks()
  state = bc_learning.initial_state(networks, config, builder.obs_dim, jax.random.PRNGKey(1))
  new, metrics = jax.jit(bc_learning.make_update_fn(networks, config))(state, batch)
  assert np.isfinite(float(metrics['bc_loss']))
  before = jax.tree_util.tree_leaves(_encoder_leaves(state.policy_params))
  after = jax.tree_util.tree_leaves(_encoder_leaves(new.policy_params))
  assert before and any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_the_perceiver_reads_images_as_patch_tokens_and_trains_from_pixels():
  from acme import specs as acme_specs

  from agents.common.errors import ConfigError
  from agents.mpo.builder import MPOBuilder
  from networks.perceiver import make_perceiver_networks

  spec = acme_specs.EnvironmentSpec(
    observations=OBS_SPEC,
    actions=specs.BoundedArray((2,), np.float32, -1.0, 1.0),
    rewards=specs.Array((), np.float32),
    discounts=specs.BoundedArray((), np.float32, 0.0, 1.0),
  )
  sizes = {'latent_dim': 8, 'num_latents': 4, 'num_heads': 2, 'blocks': 1, 'patch_size': 4}
  config = MPOConfig.from_dict(
    {'network': 'perceiver', 'perceiver': sizes, 'num_atoms': 11, 'num_samples': 4,
     'policy_loss': 'pac'}
  )  # fmt: skip
  networks = MPOBuilder(config, spec).make_networks()
  # One unoptimised compilation each: far cheaper than the Perceiver op by op, or optimised.
  compiled = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
  init = compiled(lambda key: learning.initial_state(networks, config, OBS_SPEC, key))
  state = init(jax.random.PRNGKey(0))
  # 16x16 images in 4x4 patches: 16 tokens, each with its own position.
  assert state.policy_params['policy_encoder']['group_0_patch_positions'].shape == (16, 8)
  # The same as the flat Perceiver on the scaled, flattened image (one image group).
  flat = make_perceiver_networks(
    2, [(SIZE, SIZE, 6)], num_atoms=11, latent_dim=8, num_latents=4, num_heads=2,
    num_self_attend_blocks=1, patch_size=4,
  )  # fmt: skip
  batch = _random_batch()
  obs = batch.observation
  vector = np.asarray(scale_pixels(obs)).reshape(8, -1)
  got = compiled(networks.policy.apply)(state.policy_params, obs)
  want = compiled(flat.policy.apply)(state.policy_params, vector)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The critic broadcasts each image over the sampled actions.
  q = jax.eval_shape(networks.critic.apply, state.critic_params, obs, jnp.zeros((4, 8, 2)))
  assert q.shape == (4, 8, 11)
  assert networks.augment is not None and networks.share_encoder is None
  new, metrics = compiled(learning.make_update_fn(networks, config))(state, batch)
  assert np.isfinite(float(metrics['critic_loss'])) and np.isfinite(float(metrics['policy_loss']))
  moved = jax.tree_util.tree_map(
    lambda a, b: not np.array_equal(a, b), state.critic_params, new.critic_params
  )
  assert all(jax.tree_util.tree_leaves(moved['critic_encoder']))
  # A patch size that does not tile the image is refused, naming it.
  bad = MPOConfig.from_dict({'network': 'perceiver', 'perceiver': {**sizes, 'patch_size': 5}})
  with pytest.raises(ConfigError, match='perceiver.patch_size=5'):
    MPOBuilder(bad, spec)
