"""Training windows for the generalist: stored episodes as fixed-length token sequences.

A window is

    [conditioning][whole timesteps of one episode][padding]

where the conditioning is, per `WindowConfig.conditioning`,

  'prompt':  whole timesteps of another episode of the same task (Gato's prompt): its last
             ones with probability `prompt_from_end` (the outcome to aim for), else from a
             uniformly drawn start;
  'task_id': one task token (the vocabulary's task id of the episode's task);
  'none':    nothing.

Only the episode's action tokens are targets (`loss_mask`); prompt, task token and padding
never are. Padding sits at the end only, where the causal mask keeps it from every real
token. Each task's body has its own TimestepLayout, so one batch mixes bodies of different
sizes; an episode's task is its metadata's 'task'.

`WindowSampler` holds the tokens of every usable episode of its stores in memory and takes
in new ones on `refresh()`, so a learner trains on the stored episodes (offline) and on
those the actors keep storing (online fine-tuning) alike.
"""

import dataclasses
import os
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from agents.common.logs import get_logger
from agents.gato.types import SequenceBatch
from launch.store.episodes import CorruptRecordError, Episode, EpisodeStore, episode_problem
from networks.tokenizer import TimestepLayout

log = get_logger('gato')

CONDITIONINGS = ('prompt', 'task_id', 'none')


@dataclasses.dataclass(frozen=True)
class WindowConfig:
  """How windows are cut."""

  length: int  # Tokens per window (at most the model's max_len).
  conditioning: str = 'prompt'
  prompt_tokens: int = 0  # Room for the prompt; it takes as many whole timesteps as fit.
  prompt_from_end: float = 0.5
  # At most this many timesteps a window after the conditioning (0: as many as fit).
  timesteps: int = 0
  # True: each window's task is drawn uniformly among the tasks with episodes (a batch
  # holds the tasks about equally); False: in proportion to their stored timesteps.
  balance_tasks: bool = True

  def __post_init__(self):
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f'conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}')
    if self.length < 1 or self.prompt_tokens < 0 or self.timesteps < 0:
      raise ValueError(f'length must be >= 1, prompt_tokens and timesteps >= 0, got {self}')
    if not 0.0 <= self.prompt_from_end <= 1.0:
      raise ValueError(f'prompt_from_end must be in [0, 1], got {self.prompt_from_end}')

  def prefix_tokens(self, layout: TimestepLayout) -> int:
    """The most tokens the conditioning takes before a window of this body."""
    if self.conditioning == 'prompt':
      return (self.prompt_tokens // layout.num_tokens) * layout.num_tokens
    return 1 if self.conditioning == 'task_id' else 0


@dataclasses.dataclass
class _Task:
  name: str
  index: int
  layout: TimestepLayout
  episodes: List[np.ndarray] = dataclasses.field(default_factory=list)  # [T, n] tokens each
  lengths: List[int] = dataclasses.field(default_factory=list)


class WindowSampler:
  """Random token windows of the stored episodes of the tasks in `layouts`.

  Args:
    stores: one EpisodeStore or several.
    layouts: task name -> its body's TimestepLayout, all over one Vocabulary. The order is
      the tasks' index (their task-id token with conditioning 'task_id').
    config: how windows are cut.
    seed: an int seed, a np.random.Generator, or None.

  A batch draws each window's task uniformly among the tasks that have episodes (or, with
  `balance_tasks` False, in proportion to their stored timesteps), then an episode with
  probability proportional to its length and a uniform start, so every timestep of a task
  is equally likely. Episodes of other tasks, of the wrong shapes, or
  unusable (see launch.store.episodes.episode_problem) are left out with a warning.
  """

  def __init__(
    self,
    stores: Union[EpisodeStore, Sequence[EpisodeStore]],
    layouts: Mapping[str, TimestepLayout],
    config: WindowConfig,
    seed: Union[None, int, np.random.Generator] = None,
  ):
    self._stores = [stores] if isinstance(stores, EpisodeStore) else list(stores)
    if not layouts:
      raise ValueError('layouts must name at least one task')
    vocabs = {layout.vocab for layout in layouts.values()}
    if len(vocabs) != 1:
      raise ValueError('every task layout must share one Vocabulary')
    self.vocab = vocabs.pop()
    if config.conditioning == 'task_id' and self.vocab.num_tasks < len(layouts):
      raise ValueError(
        f'conditioning by task id needs Vocabulary(num_tasks >= {len(layouts)}), '
        f'it has {self.vocab.num_tasks}'
      )
    for name, layout in layouts.items():
      if config.length - config.prefix_tokens(layout) < layout.num_tokens:
        raise ValueError(
          f'window length {config.length} leaves no room for one timestep of task {name!r} '
          f'({layout.num_tokens} tokens) after its conditioning'
        )
    self.config = config
    self._tasks = [_Task(name, i, layout) for i, (name, layout) in enumerate(layouts.items())]
    self._by_name = {t.name: t for t in self._tasks}
    self._seen = [set() for _ in self._stores]
    self._rng = np.random.default_rng(seed)

  @property
  def tasks(self) -> Tuple[str, ...]:
    return tuple(t.name for t in self._tasks)

  def num_episodes(self, task: Optional[str] = None) -> int:
    """Episodes held, of one task or of all."""
    tasks = self._tasks if task is None else [self._by_name[task]]
    return sum(len(t.episodes) for t in tasks)

  def refresh(self) -> int:
    """Takes in the episodes stored since the last call; returns how many it holds now."""
    new = 0
    left_out: Dict[str, str] = {}
    for seen, store in zip(self._seen, self._stores):
      store.refresh()
      for info in store.index():
        if info.episode_id in seen:
          continue
        seen.add(info.episode_id)
        problem = self._take(store, info.episode_id)
        if problem is None:
          new += 1
        else:
          left_out[info.episode_id] = problem
    if left_out:
      first = next(iter(left_out))
      log.warning(
        'window sampler: %d episode(s) left out, e.g. %s: %s',
        len(left_out),
        first,
        left_out[first],
      )
    return new

  def _take(self, store: EpisodeStore, episode_id: str) -> Optional[str]:
    """Tokenises and holds one stored episode; why not, when it can't."""
    try:
      episode = store.read(episode_id)
    except (CorruptRecordError, KeyError) as e:
      return f'unreadable: {e}'
    problem = episode_problem(episode)
    if problem is not None:
      return problem
    task = self._by_name.get(episode.metadata.get('task'))
    if task is None:
      return f'task {episode.metadata.get("task")!r} is not one of {list(self._by_name)}'
    problem = _shape_problem(episode, task.layout)
    if problem is not None:
      return f'task {task.name!r}: {problem}'
    tokens = task.layout.timestep_tokens(
      episode.observations[:-1].astype(np.float32), episode.actions.astype(np.float32)
    )
    task.episodes.append(tokens)
    task.lengths.append(episode.length)
    return None

  def sample(self, batch_size: int) -> SequenceBatch:
    """`batch_size` random windows; ValueError while no task has an episode."""
    ready = [t for t in self._tasks if t.episodes]
    if not ready:
      raise ValueError('no stored episode of any task yet (call refresh)')
    weights = np.array([1.0 if self.config.balance_tasks else sum(t.lengths) for t in ready])
    picks = self._rng.choice(len(ready), size=batch_size, p=weights / weights.sum())
    windows = [self._window(ready[i]) for i in picks]
    return SequenceBatch(*(np.stack(parts) for parts in zip(*windows)))

  def iterate(self, batch_size: int, refresh_every: int = 100) -> Iterator[SequenceBatch]:
    """Batches forever, taking in newly stored episodes every `refresh_every` batches."""
    self.refresh()
    while True:
      for _ in range(refresh_every):
        yield self.sample(batch_size)
      self.refresh()

  def _window(self, task: _Task):
    layout, length, n = task.layout, self.config.length, task.layout.num_tokens
    lengths = np.asarray(task.lengths, np.float64)
    which = self._rng.choice(len(lengths), p=lengths / lengths.sum())
    prefix, prefix_positions = self._conditioning(task, which)
    steps = min((length - len(prefix)) // n, task.lengths[which])
    if self.config.timesteps:
      steps = min(steps, self.config.timesteps)
    start = self._rng.integers(task.lengths[which] - steps + 1)
    body = task.episodes[which][start : start + steps].reshape(-1)
    pad = length - len(prefix) - len(body)
    tokens = np.concatenate([prefix, body, np.full(pad, self.vocab.padding, np.int32)])
    positions = np.concatenate(
      [prefix_positions, np.tile(layout.positions, steps), np.zeros(pad, np.int32)]
    )
    mask = np.concatenate(
      [np.zeros(len(prefix), bool), np.tile(layout.action_mask, steps), np.zeros(pad, bool)]
    )
    return tokens.astype(np.int32), positions.astype(np.int32), mask, np.int32(task.index)

  def _conditioning(self, task: _Task, episode: int) -> Tuple[np.ndarray, np.ndarray]:
    """(tokens, positions) before the episode's timesteps."""
    c = self.config
    if c.conditioning == 'task_id':
      return np.array([self.vocab.task_token(task.index)], np.int32), np.zeros(1, np.int32)
    steps = c.prompt_tokens // task.layout.num_tokens
    if c.conditioning == 'none' or steps == 0:
      return np.zeros(0, np.int32), np.zeros(0, np.int32)
    # Another episode of the task; the episode itself when it is the task's only one.
    count = len(task.episodes)
    other = episode if count == 1 else (episode + 1 + self._rng.integers(count - 1)) % count
    prompt = task.episodes[other]
    steps = min(steps, len(prompt))
    if self._rng.random() < c.prompt_from_end:
      start = len(prompt) - steps
    else:
      start = self._rng.integers(len(prompt) - steps + 1)
    return prompt[start : start + steps].reshape(-1), np.tile(task.layout.positions, steps)


def window_batches(
  store_dirs: Sequence[Union[str, os.PathLike]],
  layouts: Mapping[str, TimestepLayout],
  config: Mapping[str, Any],
  batch_size: int,
  seed: Union[None, int, np.random.Generator] = None,
  refresh_every: int = 100,
  wait_timeout_s: Optional[float] = None,
  poll_s: float = 0.25,
) -> 'WindowBatches':
  """Batches of windows of the episodes in `store_dirs` (`config`: WindowConfig's fields):
  what a learner node hands an agent that trains on windows (its builder's
  `make_store_iterator`)."""
  sampler = WindowSampler(
    [EpisodeStore(d) for d in store_dirs], layouts, WindowConfig(**config), seed
  )
  return WindowBatches(sampler, batch_size, refresh_every, wait_timeout_s, poll_s)


class WindowBatches:
  """Endless batches of a WindowSampler, taking in new episodes every `refresh_every`.

  While no episode of its tasks is stored it waits, and after `wait_timeout_s` raises
  StopIteration, as a rate-limited replay iterator does, so a learner can check for
  shutdown; unlike a generator it can be asked again (and keeps what it has read).
  """

  def __init__(
    self,
    sampler: WindowSampler,
    batch_size: int,
    refresh_every: int = 100,
    wait_timeout_s: Optional[float] = None,
    poll_s: float = 0.25,
  ):
    self.sampler = sampler
    self._batch_size = batch_size
    self._refresh_every = refresh_every
    self._wait_timeout_s = wait_timeout_s
    self._poll_s = poll_s
    self._served = 0

  def __iter__(self) -> 'WindowBatches':
    return self

  def __next__(self) -> SequenceBatch:
    if not self.sampler.num_episodes():
      self._wait()
    elif self._served and self._served % self._refresh_every == 0:
      self.sampler.refresh()
    self._served += 1
    return self.sampler.sample(self._batch_size)

  def _wait(self) -> None:
    start = time.monotonic()
    while True:
      self.sampler.refresh()
      if self.sampler.num_episodes():
        return
      if self._wait_timeout_s is not None and time.monotonic() - start >= self._wait_timeout_s:
        raise StopIteration
      time.sleep(self._poll_s)


def _shape_problem(episode: Episode, layout: TimestepLayout) -> Optional[str]:
  obs, actions = episode.observations, episode.actions
  if obs.ndim != 2 or obs.shape[1] != layout.obs_dim:
    return f'observations of shape {obs.shape[1:]}, expected ({layout.obs_dim},)'
  if actions.ndim != 2 or actions.shape[1] != layout.action_dim:
    return f'actions of shape {actions.shape[1:]}, expected ({layout.action_dim},)'
  if episode.length < 1:
    return 'no steps'
  return None


def best_demonstrations(
  store_dirs: Sequence[Union[str, os.PathLike]], tasks: Sequence[str]
) -> Dict[str, Tuple[Episode, float]]:
  """task -> the highest-returning readable stored episode of that task (metadata 'task')
  in `store_dirs`, and its return; tasks with none stored are left out. Gato's evaluation
  prompt: a demonstration of the task from its data (damaged records are passed over). One
  pass over each store's index for all the tasks."""
  found: Dict[str, list] = {task: [] for task in tasks}
  for directory in store_dirs:
    if not os.path.isdir(directory):
      continue
    store = EpisodeStore(directory)
    for info in store.index():
      candidates = found.get(info.metadata.get('task'))
      if candidates is not None:
        candidates.append((info.episode_return, store, info))
  best = {}
  for task, candidates in found.items():
    for episode_return, store, info in sorted(candidates, key=lambda c: -c[0]):
      try:
        episode = store.read(info.episode_id)
      except (CorruptRecordError, KeyError) as e:
        log.warning(
          'demonstration %s of %s is unreadable (%s); the next best', info.episode_id, task, e
        )
        continue
      best[task] = (episode, float(episode_return))
      break
  return best
