"""The dynamics ensemble's loss: each member's Gaussian negative log-likelihood."""

import math
from typing import Dict, Optional

import jax.numpy as jnp

from networks.dynamics import Prediction

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_nll(mean: jnp.ndarray, log_std: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """-log N(target; mean, exp(log_std)^2), elementwise."""
  z = (target - mean) * jnp.exp(-log_std)
  return 0.5 * z**2 + log_std + _HALF_LOG_2PI


def ensemble_nll(
  prediction: Prediction,
  delta_target: jnp.ndarray,
  reward_target: jnp.ndarray,
  mask: Optional[jnp.ndarray] = None,
  reward_weight: float = 1.0,
) -> Dict[str, jnp.ndarray]:
  """The ensemble's loss on z-unit targets (networks.dynamics.normalize_targets).

  prediction: [E, B, obs_dim] and [E, B]; targets delta [E, B, obs_dim] and reward [E, B],
  each member's own batch (bootstrapped), or [B, ...] shared by every member; mask [E, B]
  or [B] (0 for padding). A transition's NLL sums its observation dimensions (the log
  likelihood of the whole vector) plus `reward_weight` times the reward's. Each member
  averages over its own batch and the loss SUMS the members, so a member's gradient does
  not shrink as the ensemble grows: E members train as E independent models would.

  Returns {'loss', 'member_nll' [E], 'delta_nll', 'reward_nll', 'delta_mse', 'reward_mse'}
  (the last four averaged over members and transitions, the MSEs of the means in z-units).
  """
  delta_target = jnp.broadcast_to(delta_target, prediction.delta_mean.shape)
  reward_target = jnp.broadcast_to(reward_target, prediction.reward_mean.shape)
  if mask is None:
    mask = jnp.ones(prediction.reward_mean.shape, jnp.float32)
  weights = jnp.broadcast_to(mask.astype(jnp.float32), prediction.reward_mean.shape)
  per_member = lambda x: jnp.sum(x * weights, axis=-1) / jnp.maximum(jnp.sum(weights, -1), 1.0)

  delta_nll = gaussian_nll(prediction.delta_mean, prediction.delta_log_std, delta_target).sum(-1)
  reward_nll = gaussian_nll(prediction.reward_mean, prediction.reward_log_std, reward_target)
  member_nll = per_member(delta_nll + reward_weight * reward_nll)
  delta_se = jnp.mean((prediction.delta_mean - delta_target) ** 2, axis=-1)
  reward_se = (prediction.reward_mean - reward_target) ** 2
  return {
    'loss': jnp.sum(member_nll),
    'member_nll': member_nll,
    'delta_nll': jnp.mean(per_member(delta_nll)),
    'reward_nll': jnp.mean(per_member(reward_nll)),
    'delta_mse': jnp.mean(per_member(delta_se)),
    'reward_mse': jnp.mean(per_member(reward_se)),
  }
