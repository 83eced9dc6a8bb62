"""A learned ensemble as the planner's `step(state, action) -> (next_state, reward)`.

Two ways to roll a candidate plan through E members (`propagation`):

  'particles' (the default): the state is [E, obs_dim], one particle per member, and each
    member moves its own particle with its mean prediction (PETS's TS-inf with one
    particle a member). A candidate's reward is the members' average, so it scores well
    only if it does under every member: the planner cannot exploit one member's error,
    which is what the ensemble is for. Costs E member evaluations a step.
  'mean': the state is [obs_dim]; every member predicts from it and the step takes the
    average delta and reward. Equally cheap here (the members are batched), but a
    candidate is judged on the average model, so disagreement is averaged away rather
    than penalised: a baseline, and the choice when the members agree anyway.

Not offered: a random member per candidate. The candidates' ranking would then mix plan
quality with which member each one drew, and CEM's elites would select for the
optimistic members. Predictions use the members' means, not samples of their Gaussians:
the step stays deterministic (a fixed key gives a fixed plan) and needs no key.

Reward: a learned reward head by default, or `reward_fn(obs, action, next_obs)` when the
task's reward is known as a function of the (predicted) state.
"""

from typing import Callable, NamedTuple, Optional, Tuple

import haiku as hk
import jax.numpy as jnp

from networks.dynamics import EnsembleModel, NormalizationStats, to_raw

PROPAGATIONS = ('particles', 'mean')
RewardFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


class ModelStep(NamedTuple):
  """The planner's step function and how to make its state from an observation."""

  step: Callable[[jnp.ndarray, jnp.ndarray], Tuple[jnp.ndarray, jnp.ndarray]]
  initial_state: Callable[[jnp.ndarray], jnp.ndarray]


def make_model_step(
  model: EnsembleModel,
  params: hk.Params,
  stats: NormalizationStats,
  propagation: str = 'particles',
  reward_fn: Optional[RewardFn] = None,
) -> ModelStep:
  """The ensemble as a planner step (see the module's docstring for `propagation`).

  `reward_fn` maps batched obs [..., obs_dim], action [..., action_dim] and next_obs to
  rewards [...]; without it the model's reward head is used.
  """
  if propagation not in PROPAGATIONS:
    raise ValueError(f'unknown propagation {propagation!r}; valid: {", ".join(PROPAGATIONS)}')
  members = model.sizes.num_members

  if propagation == 'particles':

    def initial_state(obs):
      obs = jnp.asarray(obs, jnp.float32)
      return jnp.broadcast_to(obs, (members, obs.shape[-1]))

    def step(state, action):
      action = jnp.broadcast_to(action, (members, action.shape[-1]))
      # [E, 1, ...]: member e gets particle e as its own batch of one.
      raw = to_raw(model.apply(params, state[:, None], action[:, None], stats), stats)
      next_obs = state + raw.delta_mean[:, 0]
      if reward_fn is None:
        return next_obs, jnp.mean(raw.reward_mean)
      return next_obs, jnp.mean(reward_fn(state, action, next_obs))

  else:

    def initial_state(obs):
      return jnp.asarray(obs, jnp.float32)

    def step(state, action):
      raw = to_raw(model.apply(params, state[None], action[None], stats), stats)
      next_obs = state + jnp.mean(raw.delta_mean[:, 0], axis=0)
      if reward_fn is None:
        return next_obs, jnp.mean(raw.reward_mean)
      return next_obs, reward_fn(state, action, next_obs)

  return ModelStep(step, initial_state)
