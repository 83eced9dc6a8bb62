"""The generalist as building blocks: transformer, tables, windows, learner, cached actor.

It learns from stored episodes only (windows of tokens, launch.store.windows), in every
mode: the launch layer hands `make_store_iterator` the store directories and the window
maker, since agents/ never imports launch/. The program's Reverb node still runs for every
agent; Gato's actors insert nothing there (`make_adder` gives None: their episodes reach
the learner through the store, which the actors' recorders fill), and its tables never hold
an insert back (MinSize(1), small FIFO), so attached robots' transitions, which the gateway
inserts besides storing their episodes, are accepted and dropped in turn.
"""

from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence

from acme import adders, core, specs
from acme.utils import counting, loggers

from agents.common.bodies import Body
from agents.common.errors import ConfigError
from agents.gato.actor import GatoActor
from agents.gato.config import GatoConfig
from agents.gato.decoding import action_token_range
from agents.gato.learner import GatoLearner
from agents.gato.types import SequenceBatch
from agents.mpo.builder import make_variable_client
from agents.replay_pipeline import ReplayPipeline, check_spec
from networks.tokenizer import TimestepLayout, Vocabulary
from networks.transformer import SequenceModel, TransformerSizes, make_transformer

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb

# launch.store.windows.window_batches, as the launch layer passes it in:
# windows(store_dirs, layouts, window_config_fields, batch_size, seed, refresh_every).
WindowMaker = Callable[..., Iterator[SequenceBatch]]


class GatoBuilder(ReplayPipeline):
  """Builds every piece of the generalist (agents.builder.Builder) for one or several bodies.

  Each task's body is its own TimestepLayout over the one vocabulary: the network is the
  same for all, only the number of tokens per timestep differs (the position embedding has
  room for the largest body). `spec` is the body this builder's actors act on (`task`);
  `bodies` (agents.common.bodies.Body by task, in the run's order) are every task's, whose
  index is its task-id token. Replay tables use `spec` (nothing is inserted by the actors).
  """

  # It learns the stored actions as labels: episodes of an expert's labels (make_dataset
  # --expert_labels) are data for it, as for BC.
  imitates = True

  def __init__(
    self,
    config: GatoConfig,
    spec: specs.EnvironmentSpec,
    obs_group_sizes: Optional[Sequence[int]] = None,
    bodies: Optional[Mapping[str, Body]] = None,
    task: Optional[str] = None,
  ):
    check_spec(spec)
    super().__init__(config.replay, spec)
    self.config = config
    self.obs_dim = int(spec.observations.shape[0])
    self.action_dim = int(spec.actions.shape[0])
    m = config.model
    self.vocab = Vocabulary(num_tasks=m.task_tokens)
    self.layout = self._layout(spec, obs_group_sizes)
    bodies = dict(bodies or {})
    if bodies and task not in bodies:
      raise ValueError(f'task {task!r} is not one of the bodies {list(bodies)}')
    self.task = task
    # task -> layout; None stands for the one task of a single-body build.
    self.layouts = {t: self._layout(b.spec, b.obs_group_sizes) for t, b in bodies.items()}
    self.task_index = list(bodies).index(task) if bodies else 0
    if m.task_tokens < max(len(bodies), 1):
      raise ConfigError(
        f'model.task_tokens={m.task_tokens} is below the {len(bodies)} tasks: raise it'
      )
    for name, layout in {task: self.layout, **self.layouts}.items():
      n = layout.num_tokens
      prefix = self._prefix_tokens(layout)
      if m.context - prefix < n:
        raise ConfigError(
          f'model.context={m.context} leaves no room for one timestep of '
          f'{name or "the task"} ({n} tokens) after the conditioning ({prefix} tokens): '
          'raise model.context'
        )

  def _layout(self, spec: specs.EnvironmentSpec, groups: Optional[Sequence[int]]):
    obs_dim, action_dim = int(spec.observations.shape[0]), int(spec.actions.shape[0])
    groups = tuple(groups or (obs_dim,))
    if sum(groups) != obs_dim:
      raise ValueError(
        f'observation groups {groups} do not add up to the observation size {obs_dim}'
      )
    return TimestepLayout(
      groups, action_dim, self.vocab, action_mu_law=self.config.model.action_mu_law
    )

  def sizes(self) -> TransformerSizes:
    m = self.config.model
    return TransformerSizes(
      vocab_size=self.vocab.size,
      # Positions within a timestep: the largest body's.
      num_positions=max(x.num_tokens for x in (self.layout, *self.layouts.values())),
      max_len=self.context(),
      model_size=m.model_size,
      num_heads=m.num_heads,
      num_layers=m.num_layers,
      widening_factor=m.widening_factor,
      value_bins=self.vocab.num_bins if m.value_embedding else 0,
      value_lookup=m.value_lookup,
    )

  def _prefix_tokens(self, layout: TimestepLayout) -> int:
    """The most tokens the conditioning takes before a timestep of `layout`."""
    w = self.config.window
    n = layout.num_tokens
    return {'prompt': w.prompt_tokens // n * n, 'task_id': 1}.get(w.conditioning, 0)

  def context(self) -> int:
    """Tokens of a training window and of the actor's cache: model.context, or with
    window.timesteps = k, what the body needing most takes for its conditioning and k
    timesteps (no window is padded beyond its need)."""
    m, k = self.config.model, self.config.window.timesteps
    if not k:
      return m.context
    layouts = (self.layout, *self.layouts.values())
    return min(m.context, max(self._prefix_tokens(x) + k * x.num_tokens for x in layouts))

  def max_targets(self) -> int:
    """The most action tokens a training window can hold: those of the whole timesteps of
    the body that fit most of them in the context (the conditioning never holds targets)."""
    layouts = (self.layout, *self.layouts.values())
    context, k = self.context(), self.config.window.timesteps
    return max(min(context // x.num_tokens, k or context) * x.action_dim for x in layouts)

  def make_networks(self) -> SequenceModel:
    return make_transformer(self.sizes())

  # --- data -------------------------------------------------------------------

  def make_rate_limiter(self) -> 'reverb.rate_limiters.RateLimiter':
    import reverb  # Late, as in agents/replay_pipeline.py: robots build actors without it.

    return reverb.rate_limiters.MinSize(1)  # Nothing samples: no insert may wait.

  def make_adder(self, client: 'reverb.Client') -> Optional[adders.Adder]:
    """None: the actors insert nothing; the store is the learner's data."""
    del client
    return None

  def window_fields(self) -> Mapping[str, Any]:
    """launch.store.windows.WindowConfig's fields for this config."""
    w = self.config.window
    return {
      'length': self.context(),
      'timesteps': w.timesteps,
      'conditioning': w.conditioning,
      'prompt_tokens': w.prompt_tokens,
      'prompt_from_end': w.prompt_from_end,
      'balance_tasks': w.balance_tasks,
    }

  def make_store_iterator(
    self, store_dirs: Sequence[Any], tasks: Sequence[str], windows: WindowMaker, seed: int = 0
  ) -> Iterator[SequenceBatch]:
    """Batches of windows of the stored episodes of `tasks` (metadata 'task'), in `store_dirs`.

    The launch layer calls this instead of building replay or store-transition batches
    whenever a builder has it (launch.nodes.learner.LearnerWorker).
    """
    unknown = [t for t in tasks if self.layouts and t not in self.layouts]
    if unknown:
      raise ConfigError(f'tasks {unknown} have no body; known: {list(self.layouts)}')
    layouts = {task: self.layouts.get(task, self.layout) for task in tasks}
    return windows(
      store_dirs,
      layouts,
      self.window_fields(),
      batch_size=self.config.replay.batch_size,
      seed=seed,
      refresh_every=self.config.window.refresh_every,
    )

  # --- learner and actor --------------------------------------------------------

  def make_learner(
    self,
    iterator: Iterator[SequenceBatch],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ) -> GatoLearner:
    return GatoLearner(
      self.make_networks(),
      self.config,
      iterator,
      seed=seed,
      counter=counter,
      logger=logger,
      max_targets=self.max_targets(),
      action_range=action_token_range(self.layout),
      num_value_bins=self.vocab.num_bins,
    )

  def make_actor(
    self,
    variable_source: core.VariableSource,
    adder: Optional[adders.Adder],
    seed: int = 0,
    deterministic: bool = False,
    version_name: Optional[str] = None,
  ) -> GatoActor:
    """Deterministic (evaluation: refreshed only when its owner asks; each action token the
    bin `model.greedy_decoding` picks), else sampled, refreshed every
    `replay.variable_update_period` steps."""
    w = self.config.window
    return GatoActor(
      self.make_networks(),
      self.layout,
      make_variable_client(
        self.config.replay.variable_update_period, variable_source, deterministic, version_name
      ),
      adder,
      seed=seed,
      deterministic=deterministic,
      greedy_decoding=self.config.model.greedy_decoding,
      conditioning=w.conditioning,
      prompt_tokens=w.prompt_tokens,
      task_index=self.task_index,
      max_timesteps=w.timesteps,
    )
