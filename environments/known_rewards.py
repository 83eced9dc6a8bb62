"""Suite tasks' rewards as jittable functions of the program's flat observations.

A planner can score predicted states with the task's own reward instead of a learned
reward head (agents.planning.model_step's `reward_fn`). Each function maps obs, action and
next_obs ([..., dim]) to rewards [...], the reward the environment gives for that step;
dm_control computes it on the state after the step and the control applied.

  'cartpole': the dense reward of cartpole:balance and cartpole:swingup (one pole), and of
    their physics variants (environments.variants changes no term of it). The flat
    observation is [cart position, pole cos, pole sin, cart velocity, pole angular velocity]
    (the groups 'position' then 'velocity', as acme's ConcatObservationWrapper orders them).
"""

import math
from typing import Callable, Dict, Tuple

import jax.numpy as jnp

RewardFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]
_VALUE_AT_MARGIN = 0.1  # dm_control.utils.rewards' default.


def gaussian_tolerance(x: jnp.ndarray, margin: float, value_at_margin: float = _VALUE_AT_MARGIN):
  """1 at x = 0, falling as a Gaussian to `value_at_margin` at |x| = margin."""
  scale = math.sqrt(-2.0 * math.log(value_at_margin))
  return jnp.exp(-0.5 * (jnp.abs(x) / margin * scale) ** 2)


def quadratic_tolerance(x: jnp.ndarray, margin: float) -> jnp.ndarray:
  """1 at x = 0, falling as 1 - (x / margin)^2 to 0 at |x| = margin, 0 beyond."""
  d = jnp.abs(x) / margin
  return jnp.where(d < 1.0, 1.0 - d**2, 0.0)


def cartpole_reward(obs: jnp.ndarray, action: jnp.ndarray, next_obs: jnp.ndarray) -> jnp.ndarray:
  """cartpole:balance and :swingup's dense reward: upright, centred, gentle, slow."""
  del obs
  cart_position, cosine, angular_velocity = next_obs[..., 0], next_obs[..., 1], next_obs[..., 4]
  upright = (cosine + 1.0) / 2.0
  centered = (1.0 + gaussian_tolerance(cart_position, margin=2.0)) / 2.0
  control = jnp.clip(action[..., 0], -1.0, 1.0)  # MuJoCo clamps the control to its range.
  small_control = (4.0 + quadratic_tolerance(control, margin=1.0)) / 5.0
  small_velocity = (1.0 + gaussian_tolerance(angular_velocity, margin=5.0)) / 2.0
  return upright * centered * small_control * small_velocity


# name -> (reward, the (obs_dim, action_dim) it is defined for).
REWARDS: Dict[str, Tuple[RewardFn, Tuple[int, int]]] = {
  'cartpole': (cartpole_reward, (5, 1)),
}
