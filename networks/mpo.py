"""The policy and critic networks used by the MPO-family learners."""

import dataclasses
from typing import Sequence

import haiku as hk
import jax.numpy as jnp

from networks.critic import CategoricalCriticHead
from networks.mlp import LayerNormMLP
from networks.policy import GaussianHead, GaussianParams


@dataclasses.dataclass(frozen=True)
class MPONetworks:
  """Pure (init, apply) pairs.

  policy.apply(params, obs[B, O]) -> GaussianParams([B, A], [B, A])
  critic.apply(params, obs[..., O], action[..., A]) -> logits[..., K] (or value[...] if K == 1)
  """
  policy: hk.Transformed
  critic: hk.Transformed
  action_dim: int


def make_mpo_networks(action_dim: int,
                      policy_layer_sizes: Sequence[int] = (256, 256, 256),
                      critic_layer_sizes: Sequence[int] = (512, 512, 256),
                      num_atoms: int = 51,
                      init_stddev: float = 0.7) -> MPONetworks:
  """Builds the MLP actor-critic with the published MPO sizes as defaults."""

  def policy_fn(obs: jnp.ndarray) -> GaussianParams:
    torso = LayerNormMLP(policy_layer_sizes, name='policy_torso')
    return GaussianHead(action_dim, init_scale=init_stddev)(torso(obs))

  def critic_fn(obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    torso = LayerNormMLP(critic_layer_sizes, name='critic_torso')
    x = jnp.concatenate([obs, action], axis=-1)
    return CategoricalCriticHead(num_atoms)(torso(x))

  return MPONetworks(policy=hk.without_apply_rng(hk.transform(policy_fn)),
                     critic=hk.without_apply_rng(hk.transform(critic_fn)),
                     action_dim=action_dim)
