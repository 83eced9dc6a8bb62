"""Experiment configuration: what to run, for how long, and where."""

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from agents import registry
from agents.common.errors import ConfigError
from launch.slurm.config import SlurmConfig
from launch.tasks import TaskWeights, parse_tasks

# slurm: one batch job on a Slurm cluster, a job step per node (see launch/slurm).
LAUNCH_TYPES = ('local_mp', 'local_mt', 'slurm')
# online: actors and learner together. offline: no actors, the learner trains on
# stored episodes only. offline_to_online: start from stored data (and maybe a
# checkpoint), then add actors. iterated: collect K episodes, infer M steps on
# all stored data, evaluate; repeat.
MODES = ('online', 'offline', 'offline_to_online', 'iterated')
# Where the program's servers (Reverb, Courier) listen: loopback only, or every interface
# (the cluster launch needs it; see README, Security).
BINDS = ('loopback', 'all')


def setting(
  default: Any = dataclasses.MISSING,
  *,
  help: str,  # pylint: disable=redefined-builtin
  choices: Union[None, Sequence[Any], Callable[[], Sequence[Any]]] = None,
  resumable: bool = False,
  cli: bool = True,
  aliases: Sequence[str] = (),
  negative_flag: Optional[str] = None,
  default_factory: Any = dataclasses.MISSING,
) -> Any:
  """A config field with its command-line description: one source for name, default and help.

  `choices` may be a callable, read when the command line is built (e.g. registered names).
  `resumable`: a relaunch of an existing run may change it (everything else comes from the
  run's stored config). `cli=False` keeps it off the generated command line; `aliases` are
  extra flag spellings; `negative_flag` is the one flag of a bool that defaults to True
  (e.g. '--no_store' sets store_episodes to False).
  """
  metadata = {
    'help': help,
    'choices': choices if callable(choices) or not choices else tuple(choices),
    'resumable': resumable,
    'cli': cli,
    'aliases': tuple(aliases),
    'negative_flag': negative_flag,
  }
  if default_factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=default_factory, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class ExperimentConfig:
  """One experiment: task, topology, budget, cadence of evaluation and checkpoints."""

  run_dir: str = setting('runs/default', help='run directory (default: runs/<domain>_<task>)')
  task: str = setting(
    'cartpole:swingup',
    help='dm_control domain:task, or a physics variant: domain:task@param=value,... '
    '(e.g. cartpole:swingup@pole_length=0.8; environments/variants.py)',
  )
  tasks: str = setting(
    '',
    help='several tasks in one program, comma-separated, each with an optional weight: '
    "'cartpole:swingup=2,point_mass:easy'. Actors are spread over them by weight (smooth "
    'weighted round robin), the evaluator evaluates each; --task, the one robots attach to, '
    'is then the first unless given (default: --task alone)',
  )
  seed: int = setting(0, help='seed of the learner, actors (seed + actor index) and evaluator')
  num_actors: int = setting(2, help='actor processes', resumable=True)
  envs_per_actor: int = setting(
    1,
    resumable=True,
    help='environments each actor process steps, with one batched policy call per step; '
    'each is its own stream (seed, n-step adder, store source), as one actor would be',
  )
  launch_type: str = setting(
    'local_mp',
    choices=LAUNCH_TYPES,
    resumable=True,
    aliases=('--launch',),
    help='local_mp: one process per node here; local_mt: threads in one process; '
    'slurm: submit a batch job',
  )
  actor_failures: str = setting(
    'restart',
    choices=('restart', 'continue', 'stop'),
    resumable=True,
    help='when an actor process dies: restart it (at most --max_actor_restarts times each), '
    'continue with fewer, or stop the program',
  )
  max_actor_restarts: int = setting(3, resumable=True, help='restarts per actor')
  mode: str = setting(
    'online',
    choices=MODES,
    resumable=True,
    help='online: actors and learner together; offline: the learner trains on stored episodes '
    'only; offline_to_online: start from stored data (and --init_checkpoint), add actors; '
    'iterated: collect --collect_episodes, infer --infer_steps on all stored data, evaluate; '
    '--iterations times',
  )
  algorithm: str = setting(
    'mpo',
    choices=registry.names,
    help="the agent (registered name): 'mpo' (the MPO family; --agent policy_loss= "
    "picks mpo, pmpo or pac), 'bc' (behaviour cloning, the offline baseline), 'gato' "
    '(a tokenised transformer policy trained on windows of stored episodes) or '
    "'planning' (CEM through a learned dynamics ensemble)",
  )
  store_episodes: bool = setting(
    True,
    negative_flag='--no_store',
    help='keep every completed episode in <run>/store (new runs only)',
  )
  store_ratio: float = setting(
    0.0,
    resumable=True,
    help="fraction of each learner batch drawn from stored episodes (the run's own store "
    'plus --datasets); offline and iterated modes train on the store only',
  )
  datasets: Tuple[str, ...] = setting(
    (),
    resumable=True,
    help="other episode stores (earlier runs' <run>/store, imported RLDS data) to train on too",
  )
  balance_tasks: bool = setting(
    True,
    resumable=True,
    negative_flag='--no_balance_tasks',
    help="a run of several tasks: the store's share of each batch draws every task equally "
    "(by the episodes' task), whatever each task holds; --no_balance_tasks: in proportion "
    'to their stored transitions',
  )
  store_memory_gb: float = setting(
    4.0,
    resumable=True,
    help='most stored-episode data the learner holds in memory (GiB); past it, it trains on '
    'a uniform random subset of the stored episodes',
  )
  external_ratio: float = setting(
    0.25,
    resumable=True,
    help='share of each learner batch from robots attached with launch.attach, once they sent '
    'data (out of the replay share; until then the main table fills it)',
  )
  announce_host: Optional[str] = setting(
    None,
    resumable=True,
    help='host robots reach the program at: written in addresses.json, and the address the '
    'robot gateway listens on (default: $COLLECT_INFER_HOST, else localhost)',
  )
  gateway_port: int = setting(
    0,
    resumable=True,
    help='TCP port of the robot gateway (0: a free port, chosen at each launch)',
  )
  bind: str = setting(
    'loopback',
    choices=BINDS,
    resumable=True,
    help="where the program's servers listen. loopback: 127.0.0.1 only (needs a C compiler "
    'once); all: every interface, which launch_type=slurm needs, and then anyone who can reach '
    'the ports runs code as this run (trusted networks only: README, Security)',
  )
  fork_server: bool = setting(
    True,
    resumable=True,
    negative_flag='--no_fork_server',
    help='local_mp: node processes are forks of one process that imported the libraries once '
    '(about 9 s of CPU less per node); --no_fork_server: each node starts a fresh interpreter',
  )
  external_max_episode_steps: int = setting(
    100_000,
    resumable=True,
    help='longest episode an attached robot may send (longer ones are rejected whole)',
  )
  external_max_episode_mb: float = setting(
    64.0,
    resumable=True,
    help='largest episode an attached robot may send, in MiB of array data (checked before '
    'anything else is done with it)',
  )
  init_checkpoint: Optional[str] = setting(
    None, help="a checkpoint file or run directory a new run's learner starts from"
  )
  max_actor_steps: Optional[int] = setting(
    200_000,
    resumable=True,
    help='environment-step budget (the program stops at whichever budget comes first)',
  )
  max_seconds: Optional[float] = setting(None, resumable=True, help='wall-clock budget')
  max_learner_steps: Optional[int] = setting(None, resumable=True, help='learner-step budget')
  collect_episodes: int = setting(
    10, resumable=True, help='iterated: episodes collected per iteration (all actors)'
  )
  infer_steps: int = setting(
    1000, resumable=True, help='iterated: learner steps per iteration on the whole store'
  )
  iterations: int = setting(10, resumable=True, help='iterated: how many iterations')
  warm_start: bool = setting(
    True,
    resumable=True,
    negative_flag='--from_scratch',
    help="iterated: each iteration starts from the last one's learner (--from_scratch: a "
    'fresh learner each time)',
  )
  eval_every_seconds: float = setting(
    120.0, resumable=True, help='evaluate and checkpoint every this many seconds'
  )
  replay_checkpoint_max_share: float = setting(
    0.05,
    resumable=True,
    help='at most this share of the run goes to saving the replay tables with a checkpoint: '
    'after a save that took d seconds the next waits d / share (a full table of a million '
    'state transitions takes ~25 s on 2 cores); the replay node saves once more on stop',
  )
  eval_every_learner_steps: Optional[int] = setting(
    None, resumable=True, help='also evaluate and checkpoint every this many learner steps'
  )
  eval_episodes: int = setting(5, resumable=True, help='greedy episodes per evaluation')
  keep_checkpoints: int = setting(5, help='learner checkpoints kept on disk')
  progress_every_seconds: float = setting(
    15.0, resumable=True, help='a progress line every this many seconds'
  )
  learner_sample_timeout_s: float = setting(
    2.0, help='seconds a learner waits on the rate limiter before re-checking for shutdown'
  )
  pixels: bool = setting(
    False,
    help='observe camera images (uint8 [pixel_size, pixel_size, 3 * frame_stack], rendered '
    'headless) instead of state features (new runs only)',
  )
  pixel_features: bool = setting(
    False,
    help="pixels: the task's own state features ride along with the image: observations "
    "become {'features': float32 [F], 'pixels': uint8 [...]} (new runs only)",
  )
  pixel_size: int = setting(64, help='pixels: image height and width')
  camera: Optional[int] = setting(
    None,
    help="pixels: the task's camera id (-1: the free camera; default: the task's own, 1 "
    "('lookatcart') for cartpole, 2 for quadruped, 0 elsewhere: "
    'environments.pixels.DEFAULT_CAMERAS)',
  )
  frame_stack: int = setting(3, help='pixels: camera frames stacked into one observation')
  action_repeat: int = setting(
    1,
    help="pixels: environment steps per action (rewards summed, and the agent's min_reward / "
    'max_reward scaled to match; the step budget counts actions)',
  )
  replay_memory_gb: float = setting(
    24.0,
    help='pixels: most GiB of observations the replay table holds (uncompressed, one '
    "observation a step); the agent's replay.max_replay_size is lowered to fit",
  )
  eval_gifs: bool = setting(
    True,
    resumable=True,
    negative_flag='--no_eval_gifs',
    help='the evaluator writes its first episode of each evaluation to '
    '<run>/videos/step_<learner step>.gif (needs a renderer; skipped with a warning without one)',
  )
  # The algorithm's config (its registry entry's config_class); None: its defaults. A dict
  # (config.json, nested or dotted keys) is read by that class.
  agent: Any = setting(None, cli=False, help="the agent's config (--preset, --agent FIELD=VALUE)")
  slurm: SlurmConfig = setting(
    default_factory=SlurmConfig,
    cli=False,
    help='partition, time limit and per-group resources of launch_type=slurm (--slurm KEY=VALUE)',
  )

  @property
  def task_weights(self) -> TaskWeights:
    """(task, weight) of every task of the program, `task` alone without `tasks`."""
    return parse_tasks(self.tasks) if self.tasks else ((self.task, 1.0),)

  @property
  def task_names(self) -> Tuple[str, ...]:
    return tuple(name for name, _ in self.task_weights)

  @classmethod
  def resumable_fields(cls) -> Tuple[str, ...]:
    """Fields a relaunch of an existing run may change; the rest come from its stored config."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get('resumable'))

  def __post_init__(self):
    self.datasets = tuple(self.datasets)
    self.agent = _agent_config(self.algorithm, self.agent)
    if isinstance(self.slurm, dict):
      known = {f.name for f in dataclasses.fields(SlurmConfig)}
      bad = sorted(set(self.slurm) - known)
      if bad:
        raise ConfigError(f'unknown slurm config field(s) {bad}; known: {sorted(known)}')
      self.slurm = SlurmConfig(**self.slurm)
    self.validate()

  def validate(self) -> None:
    """Raises ConfigError naming the bad field and what it must be."""

    def need(cond: bool, field: str, rule: str):
      if not cond:
        raise ConfigError(f'{field}={getattr(self, field)!r} is invalid: must be {rule}')

    def is_int(v) -> bool:
      return isinstance(v, int) and not isinstance(v, bool)

    def pos_num(v) -> bool:
      return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    def fraction(v) -> bool:
      return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0

    need(isinstance(self.run_dir, str) and self.run_dir.strip() != '', 'run_dir', 'a path')
    need(
      isinstance(self.task, str) and ':' in self.task,
      'task',
      "'domain:task', e.g. cartpole:swingup",
    )
    need(isinstance(self.tasks, str), 'tasks', "a string like 'cartpole:swingup=2,walker:walk'")
    if self.tasks and self.task not in self.task_names:
      raise ConfigError(
        f'task={self.task!r} is invalid: with tasks it must be one of {", ".join(self.task_names)}'
      )
    need(is_int(self.seed) and self.seed >= 0, 'seed', 'an int >= 0')
    need(
      is_int(self.num_actors) and 1 <= self.num_actors <= 256, 'num_actors', 'an int in [1, 256]'
    )
    need(
      is_int(self.envs_per_actor) and 1 <= self.envs_per_actor <= 64,
      'envs_per_actor',
      'an int in [1, 64]',
    )
    need(
      self.envs_per_actor == 1 or self.mode != 'iterated',
      'envs_per_actor',
      '1 in iterated mode (its actors reserve one episode at a time)',
    )
    need(
      self.envs_per_actor == 1 or not self.tasks or len(self.task_names) == 1,
      'envs_per_actor',
      '1 in a run of several tasks (--tasks: each actor acts on its own task; add actors)',
    )
    need(self.launch_type in LAUNCH_TYPES, 'launch_type', f'one of {", ".join(LAUNCH_TYPES)}')
    need(
      self.max_actor_steps is None or (is_int(self.max_actor_steps) and self.max_actor_steps > 0),
      'max_actor_steps',
      'a positive int, or None for no step budget',
    )
    need(
      self.max_seconds is None or pos_num(self.max_seconds),
      'max_seconds',
      'a positive number of seconds, or None for no time budget',
    )
    need(
      self.max_learner_steps is None
      or (is_int(self.max_learner_steps) and self.max_learner_steps > 0),
      'max_learner_steps',
      'a positive int, or None for no learner-step budget',
    )
    need(self.mode in MODES, 'mode', f'one of {", ".join(MODES)}')
    need(
      self.actor_failures in ('restart', 'continue', 'stop'),
      'actor_failures',
      "'restart', 'continue' or 'stop'",
    )
    need(
      is_int(self.max_actor_restarts) and self.max_actor_restarts >= 0,
      'max_actor_restarts',
      'an int >= 0',
    )
    need(isinstance(self.store_episodes, bool), 'store_episodes', 'true or false')
    need(fraction(self.store_ratio), 'store_ratio', 'a fraction in [0, 1]')
    need(isinstance(self.balance_tasks, bool), 'balance_tasks', 'true or false')
    need(pos_num(self.store_memory_gb), 'store_memory_gb', 'a positive number of GiB')
    need(
      all(isinstance(d, str) and d for d in self.datasets),
      'datasets',
      'a list of episode store directories',
    )
    need(fraction(self.external_ratio), 'external_ratio', 'a fraction in [0, 1]')
    need(
      self.announce_host is None
      or (
        isinstance(self.announce_host, str)
        and self.announce_host.strip() != ''
        and not any(c.isspace() for c in self.announce_host)
      ),
      'announce_host',
      'a host name or address without spaces, or None',
    )
    need(self.bind in BINDS, 'bind', f'one of {", ".join(BINDS)}')
    need(isinstance(self.pixels, bool), 'pixels', 'true or false')
    need(isinstance(self.pixel_features, bool), 'pixel_features', 'true or false')
    if self.pixel_features and not self.pixels:
      raise ConfigError('pixel_features=True needs pixels=True (--pixels --pixel_features)')
    need(isinstance(self.eval_gifs, bool), 'eval_gifs', 'true or false')
    need(pos_num(self.replay_memory_gb), 'replay_memory_gb', 'a positive number of GiB')
    need(
      is_int(self.pixel_size) and 8 <= self.pixel_size <= 512, 'pixel_size', 'an int in [8, 512]'
    )
    need(
      self.camera is None or (is_int(self.camera) and self.camera >= -1),
      'camera',
      "a camera id >= 0, or -1 (unset: the task's own)",
    )
    need(
      is_int(self.frame_stack) and 1 <= self.frame_stack <= 16, 'frame_stack', 'an int in [1, 16]'
    )
    need(
      is_int(self.action_repeat) and 1 <= self.action_repeat <= 100,
      'action_repeat',
      'an int in [1, 100]',
    )
    if self.launch_type == 'slurm' and self.bind != 'all':
      raise ConfigError(
        "launch_type=slurm needs bind='all' (--bind all): its nodes call each other's "
        'servers across the cluster network, where anyone who reaches a port can run code '
        "as this run's user (Courier unpickles its calls) and write replay (Reverb has no "
        'authentication); pass it only on a trusted cluster network (README, Security)'
      )
    need(
      is_int(self.gateway_port) and 0 <= self.gateway_port <= 65535,
      'gateway_port',
      'an int in [0, 65535]',
    )
    need(
      is_int(self.external_max_episode_steps) and self.external_max_episode_steps >= 1,
      'external_max_episode_steps',
      'an int >= 1',
    )
    need(
      pos_num(self.external_max_episode_mb), 'external_max_episode_mb', 'a positive number of MiB'
    )
    need(
      self.init_checkpoint is None
      or (isinstance(self.init_checkpoint, str) and self.init_checkpoint),
      'init_checkpoint',
      'a checkpoint file or run directory, or None',
    )
    for field in ('collect_episodes', 'infer_steps', 'iterations'):
      need(is_int(getattr(self, field)) and getattr(self, field) >= 1, field, 'an int >= 1')
    need(isinstance(self.warm_start, bool), 'warm_start', 'true or false')
    if self.mode == 'offline':
      need(
        self.max_learner_steps is not None or self.max_seconds is not None,
        'max_learner_steps',
        'set (or max_seconds set) in offline mode: no actors count steps',
      )
    elif self.mode != 'iterated':
      need(
        self.max_actor_steps is not None or self.max_seconds is not None,
        'max_actor_steps',
        'set (or max_seconds set): an experiment needs a budget to stop by itself',
      )
    if self.mode in ('iterated', 'offline') or self.store_ratio > 0 or self.agent.trains_on_store:
      need(
        self.store_episodes or self.mode == 'offline',
        'store_episodes',
        f'true when training draws on the store (mode={self.mode}, store_ratio={self.store_ratio}, '
        f'algorithm={self.algorithm})',
      )
    labels = self.agent.learns_from_labels
    if labels and self.mode not in ('offline', 'iterated'):
      raise ConfigError(
        f'agent.{self.agent.labels_setting} learns from labelled stored episodes '
        f"only: it needs mode 'offline' or 'iterated', not {self.mode!r} (replay "
        'transitions carry no labels)'
      )
    if labels and self.mode == 'iterated' and self.agent.success_return is None:
      raise ConfigError(
        f'agent.{self.agent.labels_setting} in iterated mode needs '
        f"agent.{self.agent.success_return_setting}: the actors' episodes carry "
        'no success label, so their return decides'
      )
    need(pos_num(self.eval_every_seconds), 'eval_every_seconds', 'a positive number')
    need(
      pos_num(self.replay_checkpoint_max_share) and self.replay_checkpoint_max_share <= 1,
      'replay_checkpoint_max_share',
      'a number in (0, 1]',
    )
    need(
      self.eval_every_learner_steps is None
      or (is_int(self.eval_every_learner_steps) and self.eval_every_learner_steps > 0),
      'eval_every_learner_steps',
      'a positive int, or None',
    )
    need(is_int(self.eval_episodes) and self.eval_episodes >= 1, 'eval_episodes', 'an int >= 1')
    need(
      is_int(self.keep_checkpoints) and self.keep_checkpoints >= 1,
      'keep_checkpoints',
      'an int >= 1',
    )
    need(
      pos_num(self.progress_every_seconds) and self.progress_every_seconds <= 30,
      'progress_every_seconds',
      'in (0, 30]',
    )
    need(pos_num(self.learner_sample_timeout_s), 'learner_sample_timeout_s', 'a positive number')

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> 'ExperimentConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f'unknown experiment config field(s) {unknown}; known: {sorted(known)}')
    return cls(**values)


def _agent_config(algorithm: str, agent: Any) -> Any:
  """`agent` as the registered algorithm's config: its defaults for None, read from a dict."""
  if not isinstance(algorithm, str):
    raise ConfigError(
      f'algorithm={algorithm!r} is invalid: must be one of {", ".join(registry.names())}'
    )
  config_class = registry.get(algorithm).config_class
  if agent is None:
    return config_class()
  if isinstance(agent, dict):
    return config_class.from_dict(agent)
  if not isinstance(agent, config_class):
    raise ConfigError(
      f'agent is a {type(agent).__name__}; algorithm {algorithm!r} takes a {config_class.__name__}'
    )
  return agent
