"""Model-predictive control over a learned (or known) model: random shooting and CEM.

The model is any jittable `step(state, action) -> (next_state, reward)`; its parameters
are closed over. `state` is any pytree (a model of several ensemble members carries one
state per member, see agents.planning.model_step). A plan is `horizon` decisions
[horizon, action_dim]; each decision is held for `action_repeat` model steps, so a
candidate is scored on `horizon * action_repeat` steps, all in one `lax.scan`, and the
candidates are `vmap`ped over that scan.

  plan = make_planner(step, config, method='cem')  # jitted
  result = plan(state, key)                        # result.action: what to do now
  result = plan(next_state, key, initial_plan=shift_plan(result.plan, config))

Warm start: `initial_plan` centres CEM's first sampling distribution (and is itself one of
random shooting's candidates); `proposals` [P, horizon, action_dim] (a policy's action
sequences, say) replace the last P samples of the first iteration, so a good proposal
survives as an elite and a bad one costs one candidate slot.

Terminal value: `terminal_value(final_state)` (a critic's estimate of what follows the
horizon), discounted like the step after the plan's last, is added to each plan's return.
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

State = Any
StepFn = Callable[[State, jnp.ndarray], Tuple[State, jnp.ndarray]]
METHODS = ('cem', 'random_shooting')


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
  """The planner's settings. Bounds are per action dimension (their length is action_dim).

  Random shooting spends the same budget as CEM: `num_candidates * iterations` uniform
  samples in one round, so the two compare at equal model evaluations.
  """

  action_minimum: Tuple[float, ...]
  action_maximum: Tuple[float, ...]
  horizon: int = 12  # Decisions per plan.
  num_candidates: int = 256  # Per CEM iteration.
  iterations: int = 4
  num_elites: int = 32
  action_repeat: int = 1  # Model steps each decision is held for.
  init_std: float = 0.5  # CEM's first std, as a fraction of each dimension's range.
  min_std: float = 0.01  # Floor on CEM's std (same units), so it never collapses to 0.
  smoothing: float = 0.0  # Weight of the old mean/std in CEM's refit (0: the elites only).
  discount: float = 1.0  # Per model step.

  def __post_init__(self):
    lo = tuple(float(x) for x in self.action_minimum)
    hi = tuple(float(x) for x in self.action_maximum)
    object.__setattr__(self, 'action_minimum', lo)
    object.__setattr__(self, 'action_maximum', hi)
    if not lo or len(lo) != len(hi) or any(a >= b for a, b in zip(lo, hi)):
      raise ValueError(
        f'action bounds must have one minimum < maximum per dimension, got {lo} and {hi}'
      )
    for name in ('horizon', 'num_candidates', 'iterations', 'num_elites', 'action_repeat'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'PlannerConfig.{name} must be an int >= 1, got {value!r}')
    if self.num_elites > self.num_candidates:
      raise ValueError(f'num_elites={self.num_elites} exceeds num_candidates={self.num_candidates}')
    if not 0.0 <= self.smoothing < 1.0 or not 0.0 < self.discount <= 1.0:
      raise ValueError(
        f'smoothing must be in [0, 1) and discount in (0, 1], got {self.smoothing}, {self.discount}'
      )

  @property
  def action_dim(self) -> int:
    return len(self.action_minimum)

  @property
  def plan_shape(self) -> Tuple[int, int]:
    return (self.horizon, self.action_dim)


class PlanResult(NamedTuple):
  action: jnp.ndarray  # [action_dim]: the first decision, to act on now.
  plan: jnp.ndarray  # [horizon, action_dim]: the whole plan, to warm-start the next call.
  value: jnp.ndarray  # []: the best candidate's return under the model.
  best_plan: jnp.ndarray  # [horizon, action_dim]: the candidate of that return.


def _bounds(config: PlannerConfig) -> Tuple[jnp.ndarray, jnp.ndarray]:
  return jnp.asarray(config.action_minimum), jnp.asarray(config.action_maximum)


def shift_plan(plan: jnp.ndarray, config: PlannerConfig) -> jnp.ndarray:
  """The plan one decision later, for the next call: drop the first, append the middle."""
  lo, hi = _bounds(config)
  return jnp.concatenate([plan[1:], ((lo + hi) / 2)[None]], axis=0)


def rollout(
  step: StepFn, state: State, plan: jnp.ndarray, config: PlannerConfig
) -> Tuple[State, jnp.ndarray]:
  """One plan [horizon, action_dim] from `state`, in one lax.scan over its model steps.

  Returns the final state and the rewards [horizon * action_repeat].
  """
  actions = jnp.repeat(plan, config.action_repeat, axis=0)
  return jax.lax.scan(step, state, actions)


ValueFn = Optional[Callable[[State], jnp.ndarray]]


def rollout_return(
  step: StepFn,
  state: State,
  plan: jnp.ndarray,
  config: PlannerConfig,
  terminal_value: ValueFn = None,
) -> jnp.ndarray:
  """The discounted return of one plan from `state` (plus the final state's discounted
  terminal value, when given)."""
  final, rewards = rollout(step, state, plan, config)
  steps = rewards.shape[0]
  discounts = config.discount ** jnp.arange(steps, dtype=jnp.float32)
  total = jnp.sum(discounts * rewards.astype(jnp.float32))
  if terminal_value is not None:
    total = total + config.discount**steps * terminal_value(final).astype(jnp.float32)
  return total


def _returns(
  step: StepFn, state: State, plans: jnp.ndarray, config: PlannerConfig, terminal_value: ValueFn
):
  return jax.vmap(lambda p: rollout_return(step, state, p, config, terminal_value))(plans)


def _with_proposals(samples: jnp.ndarray, proposals: Optional[jnp.ndarray], config):
  if proposals is None:
    return samples
  lo, hi = _bounds(config)
  proposals = jnp.clip(jnp.asarray(proposals, samples.dtype), lo, hi)
  if proposals.ndim != 3 or proposals.shape[1:] != config.plan_shape:
    raise ValueError(f'proposals must be [P, {config.plan_shape}], got {proposals.shape}')
  if proposals.shape[0] > samples.shape[0]:
    raise ValueError(f'{proposals.shape[0]} proposals exceed {samples.shape[0]} candidates')
  return samples.at[samples.shape[0] - proposals.shape[0] :].set(proposals)


def random_shooting(
  step: StepFn,
  state: State,
  key: jnp.ndarray,
  config: PlannerConfig,
  initial_plan: Optional[jnp.ndarray] = None,
  proposals: Optional[jnp.ndarray] = None,
  terminal_value: ValueFn = None,
) -> PlanResult:
  """The best of `num_candidates * iterations` uniform plans (plus any warm start)."""
  lo, hi = _bounds(config)
  n = config.num_candidates * config.iterations
  plans = jax.random.uniform(key, (n,) + config.plan_shape, minval=lo, maxval=hi)
  if initial_plan is not None:
    plans = plans.at[0].set(jnp.clip(initial_plan, lo, hi))
  plans = _with_proposals(plans, proposals, config)
  returns = _returns(step, state, plans, config, terminal_value)
  best = jnp.argmax(returns)
  return PlanResult(plans[best, 0], plans[best], returns[best], plans[best])


def cem(
  step: StepFn,
  state: State,
  key: jnp.ndarray,
  config: PlannerConfig,
  initial_plan: Optional[jnp.ndarray] = None,
  proposals: Optional[jnp.ndarray] = None,
  terminal_value: ValueFn = None,
) -> PlanResult:
  """The cross-entropy method: sample around a mean, refit mean and std to the elites.

  Samples are clipped to the bounds (rather than drawn from a truncated Gaussian), so a
  bound that is optimal is reachable exactly. The action is the final mean's first
  decision: the mean averages the elites' noise away, where the best single sample keeps it.
  """
  lo, hi = _bounds(config)
  mean = jnp.broadcast_to((lo + hi) / 2, config.plan_shape)
  if initial_plan is not None:
    mean = jnp.clip(jnp.asarray(initial_plan, jnp.float32), lo, hi)
  std = jnp.broadcast_to(config.init_std * (hi - lo), config.plan_shape)
  min_std = config.min_std * (hi - lo)
  keys = jax.random.split(key, config.iterations)
  best_plan = mean
  best_value = jnp.asarray(-jnp.inf, jnp.float32)

  def iteration(i, carry):
    mean, std, best_plan, best_value = carry
    noise = jax.random.normal(keys[i], (config.num_candidates,) + config.plan_shape)
    plans = jnp.clip(mean + std * noise, lo, hi)
    plans = plans.at[0].set(mean)  # The current mean competes too: refits never lose it.
    if proposals is not None:
      # Only the first iteration: later ones refine what the elites kept of them.
      plans = jax.lax.cond(
        i == 0, lambda p: _with_proposals(p, proposals, config), lambda p: p, plans
      )
    returns = _returns(step, state, plans, config, terminal_value)
    values, elite_idx = jax.lax.top_k(returns, config.num_elites)
    elites = plans[elite_idx]
    a = config.smoothing
    mean = a * mean + (1 - a) * elites.mean(axis=0)
    std = jnp.maximum(a * std + (1 - a) * elites.std(axis=0), min_std)
    better = values[0] > best_value
    best_plan = jnp.where(better, elites[0], best_plan)
    best_value = jnp.where(better, values[0], best_value)
    return mean, std, best_plan, best_value

  mean, _, best_plan, best_value = jax.lax.fori_loop(
    0, config.iterations, iteration, (mean, std, best_plan, best_value)
  )
  return PlanResult(mean[0], mean, best_value, best_plan)


def make_planner(
  step: StepFn, config: PlannerConfig, method: str = 'cem', terminal_value: ValueFn = None
):
  """plan(state, key, initial_plan=None, proposals=None) -> PlanResult, jitted."""
  if method not in METHODS:
    raise ValueError(f'unknown planning method {method!r}; valid: {", ".join(METHODS)}')
  fn = cem if method == 'cem' else random_shooting

  def plan(state, key, initial_plan=None, proposals=None) -> PlanResult:
    return fn(step, state, key, config, initial_plan, proposals, terminal_value)

  return jax.jit(plan)
