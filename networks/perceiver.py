"""A Perceiver-style actor-critic for the MPO-family learners.

The flat observation vector is cut back into its observation groups (and,
optionally, image patches); each becomes a token. A small set of learned
latents cross-attends to the tokens, then self-attends. The policy decodes the
latents with one learned query; the critic decodes them with the embedded
action as the query. The critic therefore encodes each observation once and
pays only one small cross-attention per sampled action, where an MLP critic
pays a full pass per (observation, action) pair.

Nothing in the encoder depends on the order of the tokens: a group is told
apart from the others only by its own projection and its learned embedding.
"""

from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from networks.augment import random_shift
from networks.critic import CategoricalCriticHead
from networks.encoder import FEATURES, PIXELS, scale_pixels
from networks.mpo import (
  ACTION_BOUND,
  MPONetworks,
  TaskMasks,
  clip_to_action_box,
  critic_batch_shape,
  mask_policy,
)
from networks.policy import GaussianHead, GaussianParams

# An observation group: a vector of this many features, or an (H, W, C) image
# stored flattened (row-major) in the observation vector.
ObsGroup = Union[int, Tuple[int, int, int]]

_W_INIT = hk.initializers.VarianceScaling(1.0, 'fan_avg', 'uniform')
# Input embeddings scale by fan-in alone, so that features reach the tokens at about the
# same scale as the unit-scale embeddings they are added to, however small the group.
_EMBED_INIT = hk.initializers.VarianceScaling(1.0, 'fan_in', 'truncated_normal')


def _group_size(group: ObsGroup) -> int:
  return int(group) if isinstance(group, (int, np.integer)) else int(np.prod(group))


def _layer_norm(name: Optional[str] = None) -> hk.LayerNorm:
  return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name=name)


class AttentionBlock(hk.Module):
  """Pre-LayerNorm residual attention + MLP block.

  With `context` it is a cross-attention from `x` to the (already normalised)
  context; without, a self-attention of `x`. Leading dimensions of `x` may
  extend those of `context`: the context's keys and values are then projected
  once and shared by every query that broadcasts against them. `mask` [*B, T_context]
  (True: attend) hides context tokens from every query.
  """

  def __init__(self, num_heads: int, widening_factor: int = 4, name: Optional[str] = None):
    super().__init__(name=name)
    self._num_heads = num_heads
    self._widening_factor = widening_factor

  def __call__(
    self,
    x: jnp.ndarray,
    context: Optional[jnp.ndarray] = None,
    mask: Optional[jnp.ndarray] = None,
  ) -> jnp.ndarray:
    width = x.shape[-1]
    query = _layer_norm('query_norm')(x)
    context = query if context is None else context
    attention = hk.MultiHeadAttention(
      self._num_heads, key_size=width // self._num_heads, model_size=width, w_init=_W_INIT
    )
    if mask is not None:  # [*B, T] -> [*B, heads, queries, T], as the attention wants it.
      mask = mask[..., None, None, :]
    x = x + attention(query, context, context, mask=mask)
    mlp = hk.nets.MLP(
      [self._widening_factor * width, width], w_init=_W_INIT, activation=jax.nn.gelu
    )
    return x + mlp(_layer_norm('mlp_norm')(x))


class PerceiverEncoder(hk.Module):
  """obs[*B, O] -> normalised latents[*B, num_latents, latent_dim]."""

  def __init__(
    self,
    obs_groups: Sequence[ObsGroup],
    latent_dim: int = 64,
    num_latents: int = 16,
    num_heads: int = 4,
    num_self_attend_blocks: int = 2,
    patch_size: Optional[int] = None,
    widening_factor: int = 4,
    task_masks: Optional[TaskMasks] = None,
    name: str = 'perceiver_encoder',
  ):
    """`task_masks`: observations of several tasks in one layout (one token per group);
    the latents attend to the groups of the observation's own task only."""
    super().__init__(name=name)
    _check_sizes(latent_dim, num_latents, num_heads, num_self_attend_blocks)
    self._groups = _check_groups(obs_groups, patch_size)
    self._latent_dim = latent_dim
    self._num_latents = num_latents
    self._num_heads = num_heads
    self._num_blocks = num_self_attend_blocks
    self._patch_size = patch_size
    self._widening_factor = widening_factor
    self._task_masks = task_masks
    if task_masks is not None and task_masks.group_masks.shape[1] != len(self._groups):
      raise ValueError(
        f'task masks name {task_masks.group_masks.shape[1]} groups, the observation has '
        f'{len(self._groups)}'
      )
    if task_masks is not None and any(isinstance(g, tuple) for g in self._groups):
      raise ValueError('task masks take vector groups only, not images')

  @property
  def obs_size(self) -> int:
    """Length of the flat observation vector the groups add up to."""
    return sum(_group_size(g) for g in self._groups)

  def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
    mask = None if self._task_masks is None else self._task_masks.group_mask(obs)
    return self.attend(self.tokenise(obs), mask)

  @hk.transparent  # parameter names without a '~tokenise' level
  def tokenise(self, obs: jnp.ndarray) -> jnp.ndarray:
    """obs[*B, O] -> tokens[*B, T, latent_dim]: one per vector group, one per image patch."""
    if obs.shape[-1] != self.obs_size:
      raise ValueError(
        f'observation has {obs.shape[-1]} features but the groups '
        f'{self._groups} add up to {self.obs_size}'
      )
    d = self._latent_dim
    # The embedding is each group's identity (and the bias of its projection). It starts at
    # unit scale so that a one-feature group, w * x + e, does not normalise to sign(x).
    embeddings = hk.get_parameter(
      'group_embeddings', [len(self._groups), d], init=hk.initializers.TruncatedNormal(1.0)
    )
    split_at = np.cumsum([_group_size(g) for g in self._groups])[:-1]
    tokens = []
    for i, (group, x) in enumerate(zip(self._groups, jnp.split(obs, split_at, axis=-1))):
      project = hk.Linear(d, with_bias=False, w_init=_EMBED_INIT, name=f'group_{i}')
      if isinstance(group, tuple):
        x = project(self._patches(x, group))
        # Patches of one image share projection and embedding: they differ by where they are.
        x = x + hk.get_parameter(
          f'group_{i}_patch_positions', [x.shape[-2], d], init=hk.initializers.TruncatedNormal(0.02)
        )
      else:
        x = project(x[..., None, :])
      tokens.append(x + embeddings[i])
    return jnp.concatenate(tokens, axis=-2)

  def _patches(self, x: jnp.ndarray, image: Tuple[int, int, int]) -> jnp.ndarray:
    """x[*B, H*W*C] -> [*B, (H/p)*(W/p), p*p*C] non-overlapping square patches."""
    (h, w, c), p = image, self._patch_size
    x = x.reshape(x.shape[:-1] + (h // p, p, w // p, p, c))
    x = jnp.swapaxes(x, -4, -3)  # [*B, H/p, W/p, p, p, C]
    return x.reshape(x.shape[:-5] + ((h // p) * (w // p), p * p * c))

  @hk.transparent
  def attend(self, tokens: jnp.ndarray, mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """tokens[*B, T, D] -> latents[*B, num_latents, D], invariant to the order of the tokens
    (and blind to those where `mask` [*B, T] is False)."""
    latents = hk.get_parameter(
      'latents', [self._num_latents, self._latent_dim], init=hk.initializers.TruncatedNormal(0.02)
    )
    x = jnp.broadcast_to(latents, tokens.shape[:-2] + latents.shape)
    inputs = _layer_norm('input_norm')(tokens)
    x = AttentionBlock(self._num_heads, self._widening_factor, name='cross_attend')(x, inputs, mask)
    for i in range(self._num_blocks):
      x = AttentionBlock(self._num_heads, self._widening_factor, name=f'self_attend_{i}')(x)
    return _layer_norm('output_norm')(x)


class PolicyDecoder(hk.Module):
  """latents[*B, M, D] -> features[*B, D]: one learned query cross-attending to the latents."""

  def __init__(self, num_heads: int, widening_factor: int = 4, name: str = 'policy_decoder'):
    super().__init__(name=name)
    self._num_heads = num_heads
    self._widening_factor = widening_factor

  def __call__(self, latents: jnp.ndarray) -> jnp.ndarray:
    d = latents.shape[-1]
    query = hk.get_parameter('query', [1, d], init=hk.initializers.TruncatedNormal(1.0))
    x = jnp.broadcast_to(query, latents.shape[:-2] + (1, d))
    x = AttentionBlock(self._num_heads, self._widening_factor, name='cross_attend')(x, latents)
    return _layer_norm('output_norm')(x[..., 0, :])


class CriticDecoder(hk.Module):
  """(latents[*B, M, D], action[*S, *B, A]) -> features[*S, *B, D].

  The embedded action is the query. The latents' keys and values are projected
  once per observation and shared by all actions sampled for it.
  """

  def __init__(self, num_heads: int, widening_factor: int = 4, name: str = 'critic_decoder'):
    super().__init__(name=name)
    self._num_heads = num_heads
    self._widening_factor = widening_factor

  def __call__(self, latents: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    d = latents.shape[-1]
    # A random bias plays the part of the policy decoder's learned query, and keeps a
    # one-dimensional action's magnitude through the block's LayerNorm.
    query = hk.Linear(
      d, w_init=_EMBED_INIT, b_init=hk.initializers.TruncatedNormal(1.0), name='action_embedding'
    )(action)
    # hk.MultiHeadAttention takes its output's leading shape from the query, so the query
    # must carry the full batch shape; the latents broadcast inside the attention einsums.
    batch = np.broadcast_shapes(latents.shape[:-2], action.shape[:-1])
    x = jnp.broadcast_to(query, batch + (d,))[..., None, :]
    x = AttentionBlock(self._num_heads, self._widening_factor, name='cross_attend')(x, latents)
    return _layer_norm('output_norm')(x[..., 0, :])


def _check_sizes(latent_dim: int, num_latents: int, num_heads: int, num_blocks: int) -> None:
  for name, value, low in (
    ('latent_dim', latent_dim, 1),
    ('num_latents', num_latents, 1),
    ('num_heads', num_heads, 1),
    ('num_self_attend_blocks', num_blocks, 0),
  ):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
      raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
  if latent_dim % num_heads:
    raise ValueError(f'latent_dim={latent_dim} must be a multiple of num_heads={num_heads}')


def _check_groups(groups: Sequence[ObsGroup], patch_size: Optional[int]) -> Tuple[ObsGroup, ...]:
  """The groups as ints and (H, W, C) tuples; ValueError naming the first bad one."""
  groups = tuple(_check_group(g, patch_size) for g in groups)
  if not groups:
    raise ValueError('obs_group_sizes must name at least one observation group')
  return groups


def _check_group(group: ObsGroup, patch_size: Optional[int]) -> ObsGroup:
  if isinstance(group, (int, np.integer)) and not isinstance(group, bool):
    if group < 1:
      raise ValueError(f'observation group sizes must be >= 1, got {group}')
    return int(group)
  shape = tuple(int(s) for s in group)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f'an image group is (H, W, C) with positive sizes, got {group!r}')
  if not patch_size or patch_size < 1:
    raise ValueError(f'image group {shape} needs a positive patch_size, got {patch_size!r}')
  if shape[0] % patch_size or shape[1] % patch_size:
    raise ValueError(
      f'image group {shape}: height and width must be multiples of patch_size={patch_size}'
    )
  return shape


def make_perceiver_networks(
  action_dim: int,
  obs_group_sizes: Sequence[ObsGroup],
  num_atoms: int = 51,
  latent_dim: int = 64,
  num_latents: int = 16,
  num_heads: int = 4,
  num_self_attend_blocks: int = 2,
  init_stddev: float = 0.7,
  patch_size: Optional[int] = None,
  widening_factor: int = 4,
  action_bound: Optional[float] = ACTION_BOUND,
  task_masks: Optional[TaskMasks] = None,
) -> MPONetworks:
  """Builds the Perceiver actor-critic with the MLP networks' call signatures.

  `obs_group_sizes` lists the groups of the flat observation in order (see
  `environments.suite.obs_group_sizes_from_spec`); an (H, W, C) entry is an image cut into
  `patch_size` patches. Policy and critic have separate encoders. The critic sees
  actions clipped to [-action_bound, action_bound], as the MLP critic does.

  `task_masks`: several tasks in one layout (agents.common.task_layout): each task's tokens
  are its own groups and its task group (the one-hot, a task embedding), and its policy
  and critic use its own action dimensions (MPONetworks.action_mask).
  """
  encoder_kwargs: Mapping[str, Any] = dict(
    obs_groups=obs_group_sizes,
    latent_dim=latent_dim,
    num_latents=num_latents,
    num_heads=num_heads,
    num_self_attend_blocks=num_self_attend_blocks,
    patch_size=patch_size,
    widening_factor=widening_factor,
    task_masks=task_masks,
  )
  # Fail at construction, not at the first trace inside the learner.
  _check_sizes(latent_dim, num_latents, num_heads, num_self_attend_blocks)
  _check_groups(obs_group_sizes, patch_size)

  def policy_fn(obs: jnp.ndarray) -> GaussianParams:
    latents = PerceiverEncoder(**encoder_kwargs, name='policy_encoder')(obs)
    features = PolicyDecoder(num_heads, widening_factor)(latents)
    params = GaussianHead(action_dim, init_scale=init_stddev)(features)
    return params if task_masks is None else mask_policy(params, task_masks.action_mask(obs))

  def critic_fn(obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    critic_batch_shape(obs.shape, action.shape)  # a clear error for mismatched batches
    latents = PerceiverEncoder(**encoder_kwargs, name='critic_encoder')(obs)
    action = clip_to_action_box(action, action_bound)
    if task_masks is not None:
      action = action * task_masks.action_mask(obs)
    features = CriticDecoder(num_heads, widening_factor)(latents, action)
    return CategoricalCriticHead(num_atoms)(features)

  return MPONetworks(
    policy=hk.without_apply_rng(hk.transform(policy_fn)),
    critic=hk.without_apply_rng(hk.transform(critic_fn)),
    action_dim=action_dim,
    action_mask=None if task_masks is None else task_masks.action_mask,
  )


def make_perceiver_pixel_networks(
  action_dim: int,
  image_shape: Tuple[int, int, int],
  patch_size: int,
  shift_pad: int = 4,
  feature_size: int = 0,
  **kwargs: Any,
) -> MPONetworks:
  """The Perceiver actor-critic over uint8 camera images [*B, H, W, C]: each patch_size
  square of the image is a token (make_perceiver_networks' image group; `kwargs` are its
  sizes). Images are normalised as the convolutional encoder does, and the learner shifts
  them at random by up to `shift_pad` pixels (DrQ; 0: none). Policy and critic keep their
  own encoders, as on state features.

  `feature_size` F > 0: observations are {'features': [*B, F], 'pixels': images}, the
  features one more group (one token) after the image's patches.
  """
  shape = _check_group(tuple(image_shape), patch_size)
  groups = [shape] + ([int(feature_size)] if feature_size else [])
  flat = make_perceiver_networks(action_dim, groups, patch_size=patch_size, **kwargs)

  def vector(obs: Any) -> jnp.ndarray:
    if isinstance(obs, dict) != bool(feature_size):
      raise ValueError(
        f'expected {"{features, pixels}" if feature_size else "images"}, got {type(obs).__name__}'
      )
    images = obs[PIXELS] if feature_size else obs
    if tuple(images.shape[-3:]) != shape:
      raise ValueError(f'expected images [*B, {", ".join(map(str, shape))}], got {images.shape}')
    images = scale_pixels(images)
    flat_images = images.reshape(images.shape[:-3] + (-1,))
    if not feature_size:
      return flat_images
    return jnp.concatenate([flat_images, obs[FEATURES].astype(jnp.float32)], axis=-1)

  def augment(key: jnp.ndarray, obs: Any) -> Any:
    if feature_size:
      return {**obs, PIXELS: random_shift(key, obs[PIXELS], shift_pad)}
    return random_shift(key, obs, shift_pad)

  policy = hk.Transformed(
    init=lambda key, obs: flat.policy.init(key, vector(obs)),
    apply=lambda params, obs: flat.policy.apply(params, vector(obs)),
  )
  critic = hk.Transformed(
    init=lambda key, obs, action: flat.critic.init(key, vector(obs), action),
    apply=lambda params, obs, action: flat.critic.apply(params, vector(obs), action),
  )
  return MPONetworks(
    policy=policy,
    critic=critic,
    action_dim=action_dim,
    augment=augment if shift_pad > 0 else None,
  )
