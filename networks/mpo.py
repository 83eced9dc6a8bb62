"""The policy and critic networks used by the MPO-family learners."""

import dataclasses
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import haiku as hk
import jax.numpy as jnp
import numpy as np

from networks.critic import CategoricalCriticHead
from networks.mlp import LayerNormMLP
from networks.policy import GaussianHead, GaussianParams


@dataclasses.dataclass(frozen=True)
class MPONetworks:
  """Pure (init, apply) pairs.

  policy.apply(params, obs[B, O]) -> GaussianParams([B, A], [B, A])
  critic.apply(params, obs[*B, O], action[*S, *B, A]) -> logits[*S, *B, K] (or value[*S, *B]
    if K == 1); obs is broadcast over the action's extra leading (sample) dimensions, so N
    sampled actions per observation need not come with N copies of the observation.
  """

  policy: hk.Transformed
  critic: hk.Transformed
  action_dim: int
  # Pixel networks (networks.pixel_mpo): the learner's augmentation of a batch of
  # observations, augment(key, obs) -> obs, and share_encoder(policy_params, critic_params)
  # -> policy_params with the critic's encoder, which the learner applies after each step.
  augment: Optional[Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]] = None
  share_encoder: Optional[Callable[[hk.Params, hk.Params], hk.Params]] = None
  # Pixel networks with a shared encoder: encode.apply(critic_params, obs) -> Encoded, which
  # policy.apply and critic.apply take in place of the observation, so the learner encodes
  # each batch of images once per set of parameters instead of once per network call.
  encode: Optional[hk.Transformed] = None
  # Several tasks in one layout (TaskMasks): action_mask(obs[*B, O]) -> [*B, A], 1 where the
  # observation's task has the action dimension. The policy's other dimensions are a fixed
  # N(0, 1) and the critic never sees them; the learner zeroes them in its samples and
  # averages each dimension's KL over the states that have it.
  action_mask: Optional[Callable[[jnp.ndarray], jnp.ndarray]] = None


class TaskMasks(NamedTuple):
  """Which observation groups and action dimensions each task of a multi-task layout has
  (agents.common.task_layout): an observation's last K values are its task's one-hot."""

  group_masks: np.ndarray  # [K, G]: 1 where task k has observation group g.
  action_masks: np.ndarray  # [K, A]: 1 where task k has action dimension a.

  @property
  def num_tasks(self) -> int:
    return int(self.action_masks.shape[0])

  def one_hot(self, obs: jnp.ndarray) -> jnp.ndarray:
    return obs[..., -self.num_tasks :]

  def action_mask(self, obs: jnp.ndarray) -> jnp.ndarray:
    """obs[*B, O] -> [*B, A] float, 1 on the task's action dimensions."""
    return self.one_hot(obs) @ jnp.asarray(self.action_masks, obs.dtype)

  def group_mask(self, obs: jnp.ndarray) -> jnp.ndarray:
    """obs[*B, O] -> [*B, G] bool, True on the task's observation groups."""
    return self.one_hot(obs) @ jnp.asarray(self.group_masks, obs.dtype) > 0.5


def mask_policy(params: GaussianParams, mask: jnp.ndarray) -> GaussianParams:
  """The policy on a task's own action dimensions; N(0, 1) on the others, a distribution
  with no parameters, so that their log-likelihoods and KLs carry no gradient."""
  present = mask > 0.5
  return GaussianParams(
    jnp.where(present, params.mean, 0.0), jnp.where(present, params.stddev, 1.0)
  )


def critic_batch_shape(obs_shape: Sequence[int], action_shape: Sequence[int]) -> Tuple[int, ...]:
  """The leading (batch) shape a critic call produces: obs and action batches broadcast.

  Raises ValueError naming both shapes when they do not broadcast.
  """
  try:
    return tuple(np.broadcast_shapes(tuple(obs_shape[:-1]), tuple(action_shape[:-1])))
  except ValueError:
    raise ValueError(
      f'critic: observation batch {tuple(obs_shape[:-1])} does not broadcast '
      f'against action batch {tuple(action_shape[:-1])} (expected obs[*B, O] '
      'with action[*S, *B, A])'
    ) from None


# Every environment acts in the canonical box [-1, 1] (see environments/suite.py).
ACTION_BOUND = 1.0


def clip_to_action_box(action: jnp.ndarray, bound: Optional[float] = ACTION_BOUND) -> jnp.ndarray:
  """The action the environment executes: clipped to [-bound, bound] (None: unchanged).

  The Gaussian policy samples past the box and the environment clips. Left unclipped,
  the critic extrapolates Q beyond the box, where it has no meaning, and the E-step
  rewards the far-out samples: the policy's spread then grows instead of shrinking.
  """
  return action if bound is None else jnp.clip(action, -bound, bound)


def make_mpo_networks(
  action_dim: int,
  policy_layer_sizes: Sequence[int] = (256, 256, 256),
  critic_layer_sizes: Sequence[int] = (512, 512, 256),
  num_atoms: int = 51,
  init_stddev: float = 0.7,
  action_bound: Optional[float] = ACTION_BOUND,
  task_masks: Optional[TaskMasks] = None,
) -> MPONetworks:
  """Builds the MLP actor-critic with the published MPO sizes as defaults.

  The critic sees actions clipped to [-action_bound, action_bound] (None: as given).
  `task_masks`: observations of several tasks in one layout; each task's policy and critic
  use its own action dimensions only (see MPONetworks.action_mask).
  """

  def policy_fn(obs: jnp.ndarray) -> GaussianParams:
    torso = LayerNormMLP(policy_layer_sizes, name='policy_torso')
    params = GaussianHead(action_dim, init_scale=init_stddev)(torso(obs))
    return params if task_masks is None else mask_policy(params, task_masks.action_mask(obs))

  def critic_fn(obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    torso = LayerNormMLP(critic_layer_sizes, name='critic_torso')
    batch = critic_batch_shape(obs.shape, action.shape)
    action = clip_to_action_box(action, action_bound)
    if task_masks is not None:
      action = action * task_masks.action_mask(obs)
    # An MLP has nothing to share between samples: each (obs, action) pair is a full pass.
    obs = jnp.broadcast_to(obs, batch + obs.shape[-1:])
    action = jnp.broadcast_to(action, batch + action.shape[-1:])
    x = jnp.concatenate([obs, action], axis=-1)
    return CategoricalCriticHead(num_atoms)(torso(x))

  return MPONetworks(
    policy=hk.without_apply_rng(hk.transform(policy_fn)),
    critic=hk.without_apply_rng(hk.transform(critic_fn)),
    action_dim=action_dim,
    action_mask=None if task_masks is None else task_masks.action_mask,
  )
