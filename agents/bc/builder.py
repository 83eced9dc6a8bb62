"""The BC baseline: the shared data pipeline, MPO's policy network and actor, a BC learner.

A program built with this builder or the MPO one collects the same data and serves the
same policy network; only the learner differs.
"""

from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from acme import adders, core, specs
from acme.utils import counting, loggers

from agents.bc.config import BCConfig
from agents.bc.learner import BCLearner
from agents.common.observations import is_pixels
from agents.mpo.actor import MPOActor
from agents.mpo.builder import make_variable_client
from agents.replay_pipeline import ReplayPipeline, check_spec
from networks.mpo import MPONetworks, make_mpo_networks
from networks.pixel_mpo import make_pixel_mpo_networks

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb

# BC never builds the critic, but the networks come as a pair: the smallest one.
_UNUSED_CRITIC = (1,)


class BCBuilder(ReplayPipeline):
  """Builds every piece of a BC agent for one environment spec (agents.builder.Builder)."""

  # It learns the stored actions as labels, so it may also train on episodes whose stored
  # actions are an expert's labels rather than the executed ones (make_dataset
  # --expert_labels); learners of values may not.
  imitates = True

  def __init__(
    self,
    config: BCConfig,
    spec: specs.EnvironmentSpec,
    obs_group_sizes: Optional[Sequence[int]] = None,
  ):
    del obs_group_sizes  # MLP policy only.
    check_spec(spec)
    super().__init__(config.replay, spec)
    self.config = config
    self.pixels = is_pixels(spec.observations)
    # A pixel task's learner takes the image spec (or the dict of image and features); a
    # state task's the vector size.
    self.obs_dim = spec.observations if self.pixels else int(spec.observations.shape[0])
    self.action_dim = int(spec.actions.shape[0])

  def make_networks(self) -> MPONetworks:
    if self.pixels:
      e = self.config.encoder
      return make_pixel_mpo_networks(
        self.action_dim,
        self.config.policy_layer_sizes,
        _UNUSED_CRITIC,
        num_atoms=1,
        channels=e.channels,
        blocks=e.blocks,
        feature_dim=e.feature_dim,
        shift_pad=e.shift_pad,
        policy_trains_encoder=True,
      )
    return make_mpo_networks(
      self.action_dim, self.config.policy_layer_sizes, _UNUSED_CRITIC, num_atoms=1
    )

  def make_learner(
    self,
    iterator: Iterator['reverb.ReplaySample'],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ) -> BCLearner:
    return BCLearner(
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
    """The MPO actor over the BC policy (see MPOBuilder.make_actor)."""
    return MPOActor(
      self.make_networks(),
      make_variable_client(
        self.config.replay.variable_update_period, variable_source, deterministic, version_name
      ),
      adder,
      seed=seed,
      deterministic=deterministic,
    )
