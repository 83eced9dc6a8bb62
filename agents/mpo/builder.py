"""The MPO algorithm as acme-style building blocks: tables, adder, dataset, learner, actor.

The builder knows nothing about processes; launch/ wires these pieces into a
Launchpad program, and tests use them in one process.
"""

from typing import TYPE_CHECKING, Iterator, Mapping, Optional, Sequence

import numpy as np
from acme import adders, core, specs
from acme.utils import counting, loggers

from agents.common.bodies import Body, check_one_body
from agents.common.errors import ConfigError
from agents.common.observations import image_spec, is_image_with_features, is_pixels
from agents.common.task_layout import TaskActor, TaskAdder, TaskLayout
from agents.mpo.actor import MPOActor
from agents.mpo.batched_actor import MPOBatchedActor
from agents.mpo.config import MPOConfig
from agents.mpo.learner import MPOLearner
from agents.replay_pipeline import ReplayPipeline, check_spec
from agents.variable_client import VariableClient
from networks.mpo import MPONetworks, make_mpo_networks
from networks.pixel_mpo import make_pixel_mpo_networks

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb


class MPOBuilder(ReplayPipeline):
  """Builds every piece of an MPO agent for one environment spec (agents.builder.Builder).

  A run of several state tasks (`bodies`, task -> Body in the run's order, of one body or
  several) learns in one placed layout (agents.common.task_layout): `spec` is then the
  layout's, replay and the learner hold placed transitions, and the actors act on `task`'s
  environment through it. Camera runs of several tasks need one spec for all.
  """

  def __init__(
    self,
    config: MPOConfig,
    spec: specs.EnvironmentSpec,
    obs_group_sizes: Optional[Sequence[int]] = None,
    bodies: Optional[Mapping[str, Body]] = None,
    task: Optional[str] = None,
  ):
    """`obs_group_sizes`: how the flat observation splits into the environment's
    observation groups (the Perceiver's tokens); one group when not given."""
    check_spec(spec)
    self.layout: Optional[TaskLayout] = None
    self.task = task
    if bodies and len(bodies) > 1:
      if is_pixels(spec.observations):
        check_one_body('mpo', bodies)
      else:
        if task not in bodies:
          raise ValueError(f'task {task!r} is not one of the bodies {list(bodies)}')
        self.layout = TaskLayout(bodies)
        spec, obs_group_sizes = self.layout.spec, self.layout.obs_group_sizes
    super().__init__(config.replay, spec)
    self.config = config
    self.pixels = is_pixels(spec.observations)
    # A pixel task's learner takes the image spec (or the dict of image and features); a
    # state task's the vector size.
    self.obs_dim = spec.observations if self.pixels else int(spec.observations.shape[0])
    self.action_dim = int(spec.actions.shape[0])
    if self.pixels and config.network == 'perceiver':
      height, width = image_spec(spec.observations).shape[:2]
      if height % config.perceiver.patch_size or width % config.perceiver.patch_size:
        raise ConfigError(
          f'perceiver.patch_size={config.perceiver.patch_size} is invalid for {height}x{width} '
          'images: it must divide both sides'
        )
    self.obs_group_sizes = tuple(obs_group_sizes or (self._flat_size(),))
    if sum(self.obs_group_sizes) != self._flat_size():
      raise ValueError(
        f'observation groups {self.obs_group_sizes} do not add up to the '
        f'observation size {self._flat_size()}'
      )

  def _flat_size(self) -> int:
    return int(np.prod(image_spec(self.spec.observations).shape))

  def state_value(self, networks: MPONetworks):
    """value(policy_params, critic_params, obs[B, O]) -> [B]: the critic's expected Q of
    the policy's mean action, an estimate of the state's value under the policy (a planner
    scores the end of its plans with it, agents.planning.proposals)."""
    import jax.numpy as jnp

    from agents.mpo.losses import categorical_mean

    c = self.config
    support = jnp.linspace(c.v_min, c.v_max, c.num_atoms)

    def value(policy_params, critic_params, obs):
      mean, _ = networks.policy.apply(policy_params, obs)
      out = networks.critic.apply(critic_params, obs, mean)
      return categorical_mean(out, support) if c.num_atoms > 1 else out

    return value

  def make_networks(self) -> MPONetworks:
    c = self.config
    if self.pixels and c.network == 'perceiver':
      from networks.perceiver import make_perceiver_pixel_networks

      p = c.perceiver
      observations = self.spec.observations
      return make_perceiver_pixel_networks(
        self.action_dim,
        tuple(image_spec(observations).shape),
        p.patch_size,
        shift_pad=c.encoder.shift_pad,
        feature_size=(
          int(observations['features'].shape[0]) if is_image_with_features(observations) else 0
        ),
        num_atoms=c.num_atoms,
        latent_dim=p.latent_dim,
        num_latents=p.num_latents,
        num_heads=p.num_heads,
        num_self_attend_blocks=p.blocks,
      )
    if self.pixels:
      e = c.encoder
      return make_pixel_mpo_networks(
        self.action_dim,
        c.policy_layer_sizes,
        c.critic_layer_sizes,
        c.num_atoms,
        channels=e.channels,
        blocks=e.blocks,
        feature_dim=e.feature_dim,
        shift_pad=e.shift_pad,
      )
    if c.network == 'perceiver':
      from networks.perceiver import make_perceiver_networks

      p = c.perceiver
      return make_perceiver_networks(
        self.action_dim,
        self.obs_group_sizes,
        num_atoms=c.num_atoms,
        latent_dim=p.latent_dim,
        num_latents=p.num_latents,
        num_heads=p.num_heads,
        num_self_attend_blocks=p.blocks,
        task_masks=self._task_masks(),
      )
    return make_mpo_networks(
      self.action_dim,
      c.policy_layer_sizes,
      c.critic_layer_sizes,
      c.num_atoms,
      task_masks=self._task_masks(),
    )

  def _task_masks(self):
    return None if self.layout is None else self.layout.masks

  def make_learner(
    self,
    iterator: Iterator['reverb.ReplaySample'],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ) -> MPOLearner:
    return MPOLearner(
      self.make_networks(),
      self.config,
      self.obs_dim,
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
  ) -> MPOActor:
    """A stochastic actor refreshes every `replay.variable_update_period` steps.

    A deterministic (evaluation) actor never refreshes on its own: its owner
    calls `update(wait=True)` once before each evaluation, so one evaluation
    uses one policy and costs one fetch, not one per step.
    """
    actor = MPOActor(
      self.make_networks(),
      make_variable_client(
        self.config.replay.variable_update_period, variable_source, deterministic, version_name
      ),
      adder,
      seed=seed,
      deterministic=deterministic,
    )
    return actor if self.layout is None else TaskActor(actor, self.layout, self.task)

  def make_external_adder(self, client: 'reverb.Client') -> adders.Adder:
    """Attached robots send the run's task's arrays; several tasks' replay holds them placed."""
    adder = super().make_external_adder(client)
    return adder if self.layout is None else TaskAdder(adder, self.layout, self.task)

  def place_episode(self):
    """episode -> None, or why not: puts a stored episode into the learner's layout in
    place (several tasks); None when episodes are used as stored."""
    return None if self.layout is None else self.layout.place_episode

  def make_batched_actor(
    self,
    variable_source: core.VariableSource,
    stream_adders: Sequence[Optional[adders.Adder]],
    seeds: Sequence[int],
    version_name: Optional[str] = None,
  ) -> MPOBatchedActor:
    """A stochastic actor for len(seeds) environments (agents.batched_actor)."""
    return MPOBatchedActor(
      self.make_networks(),
      make_variable_client(
        self.config.replay.variable_update_period, variable_source, False, version_name
      ),
      stream_adders,
      seeds,
    )


def make_variable_client(
  update_period: int,
  variable_source: core.VariableSource,
  deterministic: bool,
  version_name: Optional[str],
) -> VariableClient:
  """The policy's client: every `update_period` steps, or (evaluation) only when asked."""
  period = 2**62 if deterministic else update_period
  return VariableClient(
    variable_source, ['policy'], update_period=period, version_name=version_name
  )
