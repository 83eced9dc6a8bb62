"""The planning actor: model-predictive control with the learner's latest dynamics model.

It plans with CEM (or random shooting) through the ensemble, in one jitted call, and acts
on the plan's first decision, held for `action_repeat` steps as the plan assumed; then it
plans again, the last plan shifted by one decision starting the search (planner.warm_start).
Its randomness is one key, from its seed, split once per plan: a fixed seed, model and
observation sequence give the same actions. The deterministic (evaluation) actor also
restarts its key at each episode's start, so one model evaluates the same from the same
start state however many episodes came before. With a proposal policy (planner.proposals_from),
each search also starts from the policy's plans through the model (agents.planning.proposals).
"""

from typing import Callable, Optional, Union

import dm_env
import jax
import jax.numpy as jnp
import numpy as np
from acme import adders, core

from agents.mpo.actor import prefer_inline_cpu_dispatch
from agents.planning.config import PlannerSettings
from agents.planning.learner import model_from_variables
from agents.planning.model_step import RewardFn, make_model_step
from agents.planning.planner import PlannerConfig, cem, random_shooting, shift_plan
from agents.planning.proposals import PolicyApply, ValueFn, policy_proposals, terminal_value
from agents.planning.sequence_model import SequenceDynamics, make_sequence_model_step
from agents.variable_client import VariableClient
from networks.dynamics import EnsembleModel


def planner_config(settings: PlannerSettings, minimum, maximum) -> PlannerConfig:
  """The planner's config for actions within [minimum, maximum] (per dimension)."""
  return PlannerConfig(
    action_minimum=tuple(np.broadcast_to(np.asarray(minimum, float), np.shape(maximum)).tolist()),
    action_maximum=tuple(np.asarray(maximum, float).tolist()),
    horizon=settings.horizon,
    num_candidates=settings.num_candidates,
    iterations=settings.iterations,
    num_elites=settings.num_elites,
    action_repeat=settings.action_repeat,
    init_std=settings.init_std,
    min_std=settings.min_std,
    smoothing=settings.smoothing,
    discount=settings.discount,
  )


def make_plan_step(
  model: Union[EnsembleModel, SequenceDynamics],
  settings: PlannerSettings,
  config: PlannerConfig,
  propagation: str,
  exploration_std: float = 0.0,
  reward_fn: Optional[RewardFn] = None,
  policy_apply: Optional[PolicyApply] = None,
  policy_value: Optional[ValueFn] = None,
):
  """step(variables, obs, key, initial_plan, policy_params=None) -> (action, next_plan,
  value, key), pure.

  `next_plan` starts the next step's search: the plan shifted by one decision
  (settings.warm_start), else the middle of the bounds. The model's variables are an
  argument, not closed over, so one compilation serves every parameter refresh. Plans are
  scored with `reward_fn` (a known reward, see model_step) or else the learned reward head.
  With `policy_apply`, `settings.num_proposals` of the policy's plans through the model
  (parameters `policy_params`) join the search's first candidates; with `policy_value`,
  each plan's end state is scored with it too (settings.terminal_value).
  """
  search = cem if settings.method == 'cem' else random_shooting
  lo, hi = jnp.asarray(config.action_minimum), jnp.asarray(config.action_maximum)

  def step(variables, obs, key, initial_plan, policy_params=None):
    if isinstance(model, SequenceDynamics):
      model_step = make_sequence_model_step(
        model.model, variables['params'], model.layout, reward_fn
      )
    else:
      params, stats = model_from_variables(variables)
      model_step = make_model_step(model, params, stats, propagation, reward_fn)
    key, plan_key, noise_key, proposal_key = jax.random.split(key, 4)
    proposals = None
    if policy_apply is not None:
      proposals = policy_proposals(
        policy_apply, policy_params, model_step, obs, proposal_key, config, settings.num_proposals
      )
    value = None
    if policy_value is not None:
      value = terminal_value(policy_value, policy_params, obs.shape[-1])
    result = search(
      model_step.step,
      model_step.initial_state(obs),
      plan_key,
      config,
      initial_plan,
      proposals,
      value,
    )
    action = result.action
    if exploration_std > 0:
      noise = exploration_std * (hi - lo) * jax.random.normal(noise_key, action.shape)
      action = jnp.clip(action + noise, lo, hi)
    if settings.warm_start:
      next_plan = shift_plan(result.plan, config)
    else:
      next_plan = jnp.broadcast_to((lo + hi) / 2, config.plan_shape)
    return action, next_plan, result.value, key

  return step


class PlanningActor(core.Actor):
  """Acts on the first decision of a plan made through the learned model, replanning every
  `action_repeat` steps."""

  def __init__(
    self,
    plan_step: Callable,
    config: PlannerConfig,
    variable_client: VariableClient,
    adder: Optional[adders.Adder] = None,
    seed: int = 0,
    deterministic: bool = False,
    policy_params=None,
  ):
    """`plan_step`: make_plan_step's function, jitted (actors of one builder share it);
    `policy_params`: its proposal policy's parameters, when it has one."""
    prefer_inline_cpu_dispatch()
    self._cpu = jax.devices('cpu')[0]  # Beside the environment, as MPOActor.
    self._policy_params = jax.device_put(policy_params, self._cpu)
    self._step = plan_step
    self._deterministic = deterministic
    self._client = variable_client
    self._adder = adder
    self._seed = seed
    self._key = jax.device_put(jax.random.PRNGKey(seed), self._cpu)
    lo, hi = np.asarray(config.action_minimum), np.asarray(config.action_maximum)
    centre = np.broadcast_to((lo + hi) / 2, config.plan_shape).astype(np.float32)
    # On the CPU like the plans the step returns: an uncommitted first plan would compile
    # the step a second time at the second call.
    self._centre = jax.device_put(centre, self._cpu)
    self._plan = self._centre
    self._repeat = config.action_repeat
    self._held: Optional[np.ndarray] = None  # The decision being held, and for how long.
    self._held_for = 0
    self._host_params = None
    self._device_params = None

  def _params(self):
    params = self._client.params
    if params is not self._host_params:
      self._device_params = jax.device_put(params, self._cpu)
      self._host_params = params
    return self._device_params

  def select_action(self, observation: np.ndarray) -> np.ndarray:
    if self._held is not None and self._held_for < self._repeat:
      self._held_for += 1
      return self._held
    observation = np.asarray(observation, dtype=np.float32)
    action, plan, _, self._key = self._step(
      self._params(), observation, self._key, self._plan, self._policy_params
    )
    self._plan = plan
    self._held, self._held_for = np.asarray(action), 1
    return self._held

  @property
  def policy_version(self) -> Optional[int]:
    """The learner step of the model planning now, when the source serves it."""
    return self._client.version

  def observe_first(self, timestep: dm_env.TimeStep):
    self._plan = self._centre  # Nothing carries over from the last episode's plan.
    self._held = None
    if self._deterministic:
      self._key = jax.device_put(jax.random.PRNGKey(self._seed), self._cpu)
    if self._adder:
      self._adder.add_first(timestep)

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep):
    if self._adder:
      self._adder.add(action, next_timestep)

  def update(self, wait: bool = False):
    self._client.update(wait)
