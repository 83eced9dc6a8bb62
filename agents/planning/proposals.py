"""Plans proposed by a policy: the planner's warm start from an MPO-family policy.

A proposal is what the policy would do along the model's own prediction: from the current
observation, the policy picks a decision, the model holds it for `action_repeat` steps, the
policy picks the next decision on the predicted observation, and so on for the horizon.
Proposal 0 follows the policy's mean; the others sample each decision from its Gaussian.
They join the planner's first candidates (agents.planning.planner), so the search keeps
what the policy knows and improves on it where the model says it can; a poor policy costs
a few candidate slots.

The policy is a pure `apply(params, obs[B, O]) -> (mean[B, A], std[B, A])`, the policy
head of networks.mpo, with its parameters passed in, so a policy refresh recompiles nothing.
With a critic it also has `value(params, obs[B, O]) -> [B]`, the state's value under the
policy: the planner can add it at the end of each plan (planner.terminal_value), so a plan
is judged beyond its horizon too.
"""

from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from agents.planning.model_step import ModelStep
from agents.planning.planner import PlannerConfig

PolicyApply = Callable[[Any, jnp.ndarray], Tuple[jnp.ndarray, jnp.ndarray]]
ValueFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


class ProposalPolicy(NamedTuple):
  """A Gaussian policy, its parameters, and (a policy with a critic) the state value, which
  takes the same parameters (launch.borrowed_policy loads one from a run)."""

  apply: PolicyApply
  params: Any
  value: Optional[ValueFn] = None


def terminal_value(value: ValueFn, params: Any, obs_dim: int) -> Callable[[Any], jnp.ndarray]:
  """A model state's value: the mean of its particles' values (one particle: its own)."""

  def at(state):
    return jnp.mean(value(params, jnp.reshape(state, (-1, obs_dim))))

  return at


def predicted_observation(state: jnp.ndarray, obs_dim: int) -> jnp.ndarray:
  """The observation a model state stands for: the members' mean for an ensemble's
  particles [E, O], the state itself for a single prediction [O]."""
  return jnp.mean(jnp.reshape(state, (-1, obs_dim)), axis=0)


def policy_proposals(
  apply: PolicyApply,
  params: Any,
  model_step: ModelStep,
  obs: jnp.ndarray,
  key: jnp.ndarray,
  config: PlannerConfig,
  num: int,
) -> jnp.ndarray:
  """`num` plans [num, horizon, action_dim] of the policy acting through the model from
  `obs`; the first follows the policy's mean, the rest its samples (within the bounds)."""
  if num < 1:
    raise ValueError(f'num proposals must be >= 1, got {num}')
  obs = jnp.asarray(obs, jnp.float32)
  obs_dim = obs.shape[-1]
  lo, hi = jnp.asarray(config.action_minimum), jnp.asarray(config.action_maximum)
  noise = jax.random.normal(key, (num,) + config.plan_shape)
  noise = noise.at[0].set(0.0)

  def one(noise_row):
    def decide(state, eps):
      mean, std = apply(params, predicted_observation(state, obs_dim)[None])
      action = jnp.clip(mean[0] + std[0] * eps, lo, hi)

      def hold(s, _):
        return model_step.step(s, action)[0], None

      state, _ = jax.lax.scan(hold, state, None, length=config.action_repeat)
      return state, action

    _, plan = jax.lax.scan(decide, model_step.initial_state(obs), noise_row)
    return plan

  return jax.vmap(one)(noise)
