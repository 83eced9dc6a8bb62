"""Gaussian policy heads."""

from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp


class GaussianParams(NamedTuple):
  """Per-dimension mean and standard deviation of a diagonal Gaussian."""

  mean: jnp.ndarray
  stddev: jnp.ndarray


class GaussianHead(hk.Module):
  """Maps features to a diagonal Gaussian over actions.

  The mean is unsquashed by default: a tanh saturates exactly where bang-bang
  control lives, and the learner's action penalty keeps means inside [-1, 1].
  The standard deviation is softplus plus a floor, so it never collapses to
  zero and the M-step's KL stays finite.
  """

  def __init__(
    self,
    action_dim: int,
    min_scale: float = 1e-4,
    init_scale: float = 0.7,
    tanh_mean: bool = False,
    name: str = 'gaussian_head',
  ):
    super().__init__(name=name)
    self._action_dim = action_dim
    self._min_scale = min_scale
    self._init_scale = init_scale
    self._tanh_mean = tanh_mean

  def __call__(self, features: jnp.ndarray) -> GaussianParams:
    w_init = hk.initializers.VarianceScaling(1e-4)
    mean = hk.Linear(self._action_dim, w_init=w_init, name='mean')(features)
    raw_std = hk.Linear(self._action_dim, w_init=w_init, name='stddev')(features)
    # Shift so that softplus(0) equals init_scale at initialisation.
    shift = jnp.log(jnp.expm1(self._init_scale))
    stddev = jax.nn.softplus(raw_std + shift) + self._min_scale
    return GaussianParams(mean=jnp.tanh(mean) if self._tanh_mean else mean, stddev=stddev)
