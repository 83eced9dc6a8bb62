"""MLP torsos."""

from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp


class LayerNormMLP(hk.Module):
  """Linear -> LayerNorm -> tanh first layer, then ELU layers.

  The normalised first layer keeps the scale of raw proprioceptive features
  (positions, velocities of very different magnitudes) from dominating.
  """

  def __init__(
    self, layer_sizes: Sequence[int], activate_final: bool = True, name: str = 'layer_norm_mlp'
  ):
    super().__init__(name=name)
    if not layer_sizes or any(int(s) <= 0 for s in layer_sizes):
      raise ValueError(f'layer_sizes must be positive integers, got {layer_sizes}')
    self._sizes = tuple(int(s) for s in layer_sizes)
    self._activate_final = activate_final

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    init = hk.initializers.VarianceScaling(1.0, 'fan_avg', 'uniform')
    x = hk.Linear(self._sizes[0], w_init=init)(x)
    x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)
    x = jnp.tanh(x)
    rest = self._sizes[1:]
    for i, size in enumerate(rest):
      x = hk.Linear(size, w_init=init)(x)
      if i < len(rest) - 1 or self._activate_final:
        x = jax.nn.elu(x)
    return x
