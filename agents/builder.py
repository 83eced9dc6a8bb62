"""The interface every agent's builder implements, in the spirit of acme's ActorLearnerBuilder.

A builder is made from the agent's config, the environment spec and (for agents whose
config says `needs_observation_groups`) the sizes of the observation's groups. It knows
nothing about processes: launch/ wires its pieces into a Launchpad program, and tests use
them in one process. Most builders derive from agents.replay_pipeline.ReplayPipeline for
the data half (tables, adders, dataset) and add networks, learner and actor.
"""

from typing import (
  TYPE_CHECKING,
  Any,
  Iterator,
  List,
  Optional,
  Protocol,
  Sequence,
  runtime_checkable,
)

from acme import adders, core, specs
from acme.utils import counting, loggers

from agents.common.replay_config import ReplayConfig

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb


@runtime_checkable
class Learner(Protocol):
  """What the program asks of a learner: acme's Learner and VariableSource, plus state.

  Optional: `set_iteration(iteration)` (collect-and-infer iteration settings) and
  `iteration_note()` (a line for the log about them, or None).
  """

  def step(self) -> None: ...

  @property
  def steps(self) -> int: ...

  def get_variables(self, names: Sequence[str]) -> List[Any]: ...

  def save(self) -> Any:
    """The whole state as numpy (a NamedTuple with a `steps` field; checkpoints hold it)."""

  def restore(self, state: Any) -> None: ...

  def set_iterator(self, iterator: Iterator['reverb.ReplaySample']) -> None: ...


class AgentConfig(Protocol):
  """An agent's config (see agents.common.config.AgentConfig)."""

  replay: ReplayConfig


@runtime_checkable
class Builder(Protocol):
  """Every piece of an agent for one environment spec.

  An agent whose config says `several_bodies` also takes `bodies` (task -> Body, see
  agents.common.bodies) and `task` (the one `spec` is) as keywords in a multi-task run.

  Optional: `make_store_iterator(store_dirs, tasks, windows, seed)`, batches of the stored
  episodes of `tasks` made with `windows` (launch.store.windows.window_batches, passed in
  by the learner node, since agents/ never imports launch/). A learner node whose builder
  has it trains on those batches in every mode, not on replay (agents.gato.builder).

  Optional: `policy_run()`, (the setting that names it, a run directory) of a policy the
  agent's actors use, or None, with `lend_policy(load)`: launch.experiment.make_builder
  hands over `load()`, which reads that run's newest checkpoint without pickles
  (launch.borrowed_policy), as agents.planning.builder uses for its proposals.
  """

  config: Any  # The agent's config dataclass.
  spec: specs.EnvironmentSpec
  obs_dim: int

  def __init__(
    self, config: Any, spec: specs.EnvironmentSpec, obs_group_sizes: Optional[Sequence[int]] = None
  ): ...

  def make_networks(self) -> Any: ...

  def make_replay_tables(self) -> List['reverb.Table']: ...

  def make_adder(self, client: 'reverb.Client') -> adders.Adder:
    """The actors' adder into the main replay table."""

  def make_external_adder(self, client: 'reverb.Client') -> adders.Adder:
    """The adder of actors attached from outside the program (robots)."""

  def make_dataset_iterator(
    self,
    server_address: str,
    rate_limiter_timeout_ms: int = -1,
    batch_size: Optional[int] = None,
    table: str = ...,
  ) -> Iterator['reverb.ReplaySample']: ...

  def make_learner(
    self,
    iterator: Iterator['reverb.ReplaySample'],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ) -> Learner: ...

  def make_actor(
    self,
    variable_source: core.VariableSource,
    adder: Optional[adders.Adder],
    seed: int = 0,
    deterministic: bool = False,
    version_name: Optional[str] = None,
  ) -> core.Actor:
    """A deterministic (evaluation) actor refreshes only when its owner calls update()."""
