"""Configuration of the Gato-style generalist: model sizes, windows, optimiser."""

import dataclasses

from agents.common.config import AgentConfig, Config, Need, finite, is_int
from agents.common.learning_rate import LearningRateDecay
from agents.common.replay_config import ReplayConfig

CONDITIONINGS = ('prompt', 'task_id', 'none')
# How the evaluator's actor picks each action token (agents.gato.decoding): the bin of the
# predicted distribution's mean, its most likely bin, or a sample of it (as Gato acts, and as
# training actors always do; seeded, so an evaluation repeats).
GREEDY_DECODINGS = ('mean', 'argmax', 'sample')


@dataclasses.dataclass
class GatoModelConfig(Config):
  """The decoder-only transformer (networks.transformer.TransformerSizes) and its tokens."""

  model_size: int = 128
  num_heads: int = 4
  num_layers: int = 2
  widening_factor: int = 4
  # Tokens of context: the training window's length and the actor's key-value cache.
  context: int = 256
  # Task-id tokens in the vocabulary (conditioning 'task_id'): room for this many tasks, so
  # adding tasks later keeps the parameters' shapes.
  task_tokens: int = 8
  # Mu-law actions (the tokeniser) or uniform bins over [-1, 1].
  action_mu_law: bool = True
  # Each value token also embedded by its bin's place in [-1, 1] (TransformerSizes.value_bins).
  value_embedding: bool = False
  # false (with value_embedding): value tokens are embedded by their place alone, with no
  # vector per bin to memorise single observations by (TransformerSizes.value_lookup).
  value_lookup: bool = True
  # The deterministic (evaluation) actor's choice of each action token (GREEDY_DECODINGS).
  greedy_decoding: str = 'mean'

  def check(self, need: Need) -> None:
    for f in ('model_size', 'num_heads', 'num_layers', 'widening_factor', 'context'):
      need(is_int(getattr(self, f)) and getattr(self, f) >= 1, f, 'an int >= 1')
    need(self.model_size % self.num_heads == 0, 'model_size', 'a multiple of num_heads')
    need(is_int(self.task_tokens) and self.task_tokens >= 1, 'task_tokens', 'an int >= 1')
    need(isinstance(self.action_mu_law, bool), 'action_mu_law', 'true or false')
    need(isinstance(self.value_embedding, bool), 'value_embedding', 'true or false')
    need(isinstance(self.value_lookup, bool), 'value_lookup', 'true or false')
    need(
      self.value_lookup or self.value_embedding,
      'value_lookup',
      'true unless value_embedding is (value tokens need an embedding)',
    )
    need(self.greedy_decoding in GREEDY_DECODINGS, 'greedy_decoding', f'one of {GREEDY_DECODINGS}')


@dataclasses.dataclass
class GatoWindowConfig(Config):
  """How training windows are cut from stored episodes (launch.store.windows.WindowConfig),
  and how the actor conditions its context the same way."""

  # 'prompt': timesteps of another episode of the task first (acting: the actor's best
  # episode so far); 'task_id': one task token; 'none': nothing.
  conditioning: str = 'prompt'
  prompt_tokens: int = 64  # Room for the prompt (whole timesteps that fit).
  prompt_from_end: float = 0.5  # Share of prompts taken from their episode's end.
  # Timesteps of history a window (and the actor's context) holds after the conditioning:
  # 0 fills model.context; n > 0 holds n, and the context is cut to what the largest body's
  # conditioning and n timesteps need (GatoBuilder.context).
  timesteps: int = 0
  # The learner takes in newly stored episodes every this many batches.
  refresh_every: int = 100
  # Several tasks: draw each window's task uniformly (true), or in proportion to the task's
  # stored timesteps (false).
  balance_tasks: bool = True

  def check(self, need: Need) -> None:
    need(self.conditioning in CONDITIONINGS, 'conditioning', f'one of {CONDITIONINGS}')
    need(is_int(self.prompt_tokens) and self.prompt_tokens >= 0, 'prompt_tokens', 'an int >= 0')
    need(
      finite(self.prompt_from_end) and 0.0 <= self.prompt_from_end <= 1.0,
      'prompt_from_end',
      'in [0, 1]',
    )
    need(is_int(self.refresh_every) and self.refresh_every >= 1, 'refresh_every', 'an int >= 1')
    need(is_int(self.timesteps) and self.timesteps >= 0, 'timesteps', 'an int >= 0')
    need(isinstance(self.balance_tasks, bool), 'balance_tasks', 'true or false')


@dataclasses.dataclass
class GatoOptimConfig(Config):
  """AdamW with global-norm clipping (agents.gato.learning.make_optimizer)."""

  learning_rate: float = 1e-4
  max_grad_norm: float = 1.0
  weight_decay: float = 1e-4
  # Share of the action tokens of a window's input replaced by a random action bin (the
  # targets stay): past actions then predict the next one less well than the observation
  # does, against copying the previous action (behaviour cloning's copycat problem).
  action_token_noise: float = 0.0
  # Every value token of a window's input (observations, past actions) moved by a uniform
  # random number of bins in [-n, n] (the targets stay): against memorising each stored
  # state's one noisy action (learning.jitter_value_tokens). 0: off.
  value_token_jitter: int = 0
  # Warm-up and cosine decay of learning_rate (agents.common.learning_rate); default constant.
  lr_decay: LearningRateDecay = dataclasses.field(default_factory=LearningRateDecay)

  def check(self, need: Need) -> None:
    for f in ('learning_rate', 'max_grad_norm'):
      need(finite(getattr(self, f)) and getattr(self, f) > 0, f, 'a finite number > 0')
    need(
      finite(self.action_token_noise) and 0.0 <= self.action_token_noise < 1.0,
      'action_token_noise',
      'a number in [0, 1)',
    )
    need(
      finite(self.weight_decay) and self.weight_decay >= 0, 'weight_decay', 'a finite number >= 0'
    )
    need(
      is_int(self.value_token_jitter) and 0 <= self.value_token_jitter < 512,
      'value_token_jitter',
      'an int in [0, 512) (bins)',
    )


@dataclasses.dataclass
class GatoConfig(AgentConfig):
  """Hyper-parameters of the generalist.

  It trains on windows of stored episodes, never on replay: of `replay` it reads the batch
  size (windows a batch) and the actors' refresh period only.
  """

  model: GatoModelConfig = dataclasses.field(default_factory=GatoModelConfig)
  window: GatoWindowConfig = dataclasses.field(default_factory=GatoWindowConfig)
  optim: GatoOptimConfig = dataclasses.field(default_factory=GatoOptimConfig)
  replay: ReplayConfig = dataclasses.field(
    default_factory=lambda: ReplayConfig(batch_size=32, min_replay_size=1, max_replay_size=1000)
  )

  @property
  def needs_observation_groups(self) -> bool:
    return True  # One token range per observation group (networks.tokenizer.TimestepLayout).

  @property
  def trains_on_store(self) -> bool:
    return True

  @property
  def several_bodies(self) -> bool:
    return True  # Each body is its own token layout over one network (networks.tokenizer).

  def check(self, need: Need) -> None:
    if self.window.conditioning == 'prompt':
      need(
        self.window.prompt_tokens < self.model.context,
        'window',
        f'prompt_tokens below model.context ({self.model.context}) with prompt conditioning',
      )
