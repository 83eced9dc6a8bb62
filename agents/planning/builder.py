"""The planning agent as building blocks: replay of one-step transitions, model learner,
planning actor (agents.builder.Builder).

The data half is the shared n-step pipeline with n_step=1 (PlanningConfig checks it), so
the learner node mixes replay, the store (`--store_ratio`; all of it in offline and
iterated modes) and attached robots' transitions for the model as it does for MPO.

A proposal policy (planner.proposals_from) is another run's: the builder names the run
(`policy_run`) and launch/ hands it a loader (`lend_policy`), since agents/ never reads
another run's files; only actors call the loader.
"""

from typing import TYPE_CHECKING, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import jax
from acme import adders, core, specs
from acme.utils import counting, loggers

from agents.common.errors import ConfigError
from agents.mpo.builder import make_variable_client
from agents.planning.actor import PlanningActor, make_plan_step, planner_config
from agents.planning.config import PlanningConfig
from agents.planning.learner import ModelLearner
from agents.planning.model_step import RewardFn
from agents.planning.planner import PlannerConfig
from agents.planning.proposals import ProposalPolicy
from agents.planning.sequence_model import SequenceDynamics, make_sequence_dynamics
from agents.replay_pipeline import ReplayPipeline, check_spec
from networks.dynamics import EnsembleModel, EnsembleSizes, make_ensemble

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb


class PlanningBuilder(ReplayPipeline):
  """Builds the model learner and planning actors for one environment spec."""

  def __init__(
    self,
    config: PlanningConfig,
    spec: specs.EnvironmentSpec,
    obs_group_sizes: Optional[Sequence[int]] = None,
  ):
    del obs_group_sizes  # The ensemble reads the flat observation.
    check_spec(spec)
    super().__init__(config.replay, spec)
    self.config = config
    self.obs_dim = int(spec.observations.shape[0])
    self.action_dim = int(spec.actions.shape[0])
    self._model: Optional[Union[EnsembleModel, SequenceDynamics]] = None
    self._plan_steps: Dict[float, Callable] = {}
    self._policy_loader: Optional[Callable[[], ProposalPolicy]] = None
    self._policy: Optional[ProposalPolicy] = None
    self.reward_fn()  # A known reward that does not fit the task fails here, in every node.

  def make_networks(self) -> Union[EnsembleModel, SequenceDynamics]:
    m = self.config.model
    if m.kind == 'transformer':
      return make_sequence_dynamics(
        self.obs_dim,
        self.action_dim,
        m.transformer_size,
        m.transformer_heads,
        m.transformer_layers,
      )
    return make_ensemble(EnsembleSizes(m.num_members, self.obs_dim, m.hidden_sizes))

  def planner_config(self) -> PlannerConfig:
    actions = self.spec.actions
    return planner_config(self.config.planner, actions.minimum, actions.maximum)

  def reward_fn(self) -> Optional[RewardFn]:
    """The known reward plans are scored with (planner.reward), None for the learned head."""
    name = self.config.planner.reward
    if name == 'learned':
      return None
    from environments.known_rewards import REWARDS

    fn, (obs_dim, action_dim) = REWARDS[name]
    if (obs_dim, action_dim) != (self.obs_dim, self.action_dim):
      raise ConfigError(
        f'PlanningConfig.planner.reward={name!r} is invalid for this task: it takes '
        f'{obs_dim} observation and {action_dim} action dimensions, the task has '
        f'{self.obs_dim} and {self.action_dim} (use learned)'
      )
    return fn

  def policy_run(self) -> Optional[Tuple[str, str]]:
    """(setting, run directory) of the policy that proposes plans, or None."""
    return self.config.policy_run

  def lend_policy(self, load: Callable[[], ProposalPolicy]) -> None:
    """Gives the loader of policy_run()'s policy, called once, by the first actor made."""
    self._policy_loader = load

  def proposal_policy(self) -> Optional[ProposalPolicy]:
    """The policy that proposes plans, loaded on first use; None without proposals_from."""
    if self.policy_run() is None:
      return None
    if self._policy is None:
      if self._policy_loader is None:
        raise ConfigError(
          f'PlanningConfig.planner.proposals_from={self.config.planner.proposals_from!r}: '
          'no policy loader was lent (launch.experiment.make_builder lends one; a builder '
          'made by hand needs lend_policy)'
        )
      self._policy = self._policy_loader()
    return self._policy

  def make_learner(
    self,
    iterator: Iterator['reverb.ReplaySample'],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ) -> ModelLearner:
    return ModelLearner(
      self.make_networks(),
      self.config,
      self.obs_dim,
      self.action_dim,
      iterator,
      seed=seed,
      counter=counter,
      logger=logger,
    )

  def make_actor(
    self,
    variable_source: core.VariableSource,
    adder: Optional[adders.Adder],
    seed: int = 0,
    deterministic: bool = False,
    version_name: Optional[str] = None,
  ) -> PlanningActor:
    """Plans with the learner's model, refreshed every `replay.variable_update_period`
    steps (the deterministic, evaluation, actor only when its owner asks)."""
    noise = 0.0 if deterministic else self.config.planner.exploration_std
    policy = self.proposal_policy()
    return PlanningActor(
      self.plan_step(noise),
      self.planner_config(),
      make_variable_client(
        self.config.replay.variable_update_period, variable_source, deterministic, version_name
      ),
      adder,
      seed=seed,
      deterministic=deterministic,
      policy_params=None if policy is None else policy.params,
    )

  def plan_step(self, exploration_std: float = 0.0) -> Callable:
    """The actors' jitted planning step (agents.planning.actor.make_plan_step), made once
    per builder and noise level: every actor of a process shares its compilation."""
    if exploration_std not in self._plan_steps:
      if self._model is None:
        self._model = self.make_networks()
      policy = self.proposal_policy()
      value = None
      if self.config.planner.terminal_value:
        if policy.value is None:
          raise ConfigError(
            'PlanningConfig.planner.terminal_value=True is invalid for '
            f'proposals_from={self.config.planner.proposals_from!r}: its agent has no critic '
            '(an mpo run has one)'
          )
        value = policy.value
      self._plan_steps[exploration_std] = jax.jit(
        make_plan_step(
          self._model,
          self.config.planner,
          self.planner_config(),
          self.config.model.propagation,
          exploration_std,
          self.reward_fn(),
          None if policy is None else policy.apply,
          value,
        )
      )
    return self._plan_steps[exploration_std]
