"""Critic heads taking (observation, action)."""

import haiku as hk
import jax.numpy as jnp


class CategoricalCriticHead(hk.Module):
  """Logits over a fixed support of values (distributional critic).

  With `num_atoms == 1` the single output is the value itself (the
  non-distributional option).
  """

  def __init__(self, num_atoms: int, name: str = 'critic_head'):
    super().__init__(name=name)
    self._num_atoms = num_atoms

  def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
    out = hk.Linear(self._num_atoms, w_init=hk.initializers.VarianceScaling(1e-5))(features)
    return out[..., 0] if self._num_atoms == 1 else out
