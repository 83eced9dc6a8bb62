"""Diagonal Gaussian helpers in pure JAX.

All functions broadcast over leading axes; the action dimension A is the last
axis of every array.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob_per_dim(mean: Array, stddev: Array, x: Array) -> Array:
  """Log density of `x` under N(mean, stddev**2), per dimension: [..., A]."""
  z = (x - mean) / stddev
  return -0.5 * jnp.square(z) - jnp.log(stddev) - _HALF_LOG_TWO_PI


def gaussian_log_prob(mean: Array, stddev: Array, x: Array) -> Array:
  """Log density of `x` under a diagonal Gaussian, summed over the last axis."""
  return jnp.sum(gaussian_log_prob_per_dim(mean, stddev, x), axis=-1)


def gaussian_kl(mean_p: Array, std_p: Array, mean_q: Array, std_q: Array) -> Array:
  """Closed-form KL(p || q) for each dimension of two diagonal Gaussians: [..., A]."""
  var_ratio = jnp.square(std_p / std_q)
  mean_term = jnp.square((mean_p - mean_q) / std_q)
  # log(std_q / std_p) written as -0.5 * log(var_ratio) to reuse the ratio.
  return 0.5 * (var_ratio + mean_term - 1.0 - jnp.log(var_ratio))


def gaussian_sample(key: Array, mean: Array, stddev: Array, num_samples: int) -> Array:
  """Reparameterised samples from N(mean, stddev**2): [num_samples, ..., A].

  `num_samples` must be a static Python int under jit.
  """
  shape = jnp.broadcast_shapes(jnp.shape(mean), jnp.shape(stddev))
  dtype = jnp.result_type(mean, stddev, 1.0)
  noise = jax.random.normal(key, (num_samples,) + tuple(shape), dtype=dtype)
  return mean + stddev * noise
