"""Uniform n-step transitions drawn from every episode in one or more stores.

The transitions are exactly those acme's
`acme.adders.reverb.NStepTransitionAdder(n_step, discount)` inserts for the
same episodes, so a learner can't tell stored data from the replay table:

* From s_0 the adder writes n transitions, to s_1, ..., s_min(n, T); from
  every later s_t one, to s_min(t + n, T) (shorter near the episode's end).
  So an episode of T steps gives T - 1 + min(n, T) transitions, and uniform
  sampling over them weights s_0 as a uniform replay table does.
* For a transition of k steps from t, with g = float32(discount):
    reward   = r_t + g d_t r_{t+1} + ... + g^{k-1} d_t ... d_{t+k-2} r_{t+k-1}
    discount = g^{k-1} d_t ... d_{t+k-1}
  (one g fewer than steps: the learner multiplies its own discount in). They
  are accumulated in the adder's order and dtypes (discount dtype for the
  discount, reward dtype for the return), so values match bit for bit.

With a `labeller`, each transition also carries its episode's success label as
`extras['success']` (float32, 1 or 0): PMPO's preferred / dis-preferred sets
from stored data (agents.mpo.labels).

The sampler holds the stored episodes in memory (growable flat arrays), so
sampling a batch is a few vectorised gathers whatever the store's size; past
a memory cap it holds a uniform random subset of them (see StoreSampler).
"""

import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
from acme import types

from agents.common.logs import get_logger
from launch.store.episodes import CorruptRecordError, Episode, EpisodeStore, episode_problem

log = get_logger('store')

DEFAULT_MEMORY_CAP_BYTES = 4 << 30
# Episode metadata saying whose action the stored one is: 'expert' when an expert's label
# was stored while a noisy action was executed (experiments.make_dataset --expert_labels).
ACTION_LABEL_KEY = 'action_label'
LABELLED_ACTIONS_PROBLEM = (
  "metadata 'action_label' is 'expert': its actions are labels, not the executed ones "
  '(a dataset for imitation only)'
)
_LOW_WATER = 0.9  # After an eviction the held episodes fit in this share of the cap.


class _Growable:
  """A numpy array that grows along axis 0 with amortised O(1) appends."""

  def __init__(self, dtype: Optional[np.dtype] = None):
    self._buffer: Optional[np.ndarray] = None
    self._dtype = dtype
    self._size = 0

  def extend(self, values: np.ndarray) -> None:
    values = np.asarray(values, dtype=self._dtype)
    needed = self._size + values.shape[0]
    if self._buffer is None or needed > self._buffer.shape[0]:
      capacity = max(needed, 2 * (0 if self._buffer is None else self._buffer.shape[0]), 16)
      buffer = np.empty((capacity,) + values.shape[1:], values.dtype)
      if self._buffer is not None:
        buffer[: self._size] = self._buffer[: self._size]
      self._buffer = buffer
    self._buffer[self._size : needed] = values
    self._size = needed

  @property
  def array(self) -> np.ndarray:
    if self._buffer is None:
      return np.empty((0,), self._dtype)
    return self._buffer[: self._size]


def transition_starts(length: int, n_step: int) -> Tuple[np.ndarray, np.ndarray]:
  """(start step t, number of steps k) of every transition the n-step adder
  writes for an episode of `length` steps."""
  first_k = np.arange(1, min(n_step, length) + 1)
  later_t = np.arange(1, length)
  later_k = np.minimum(later_t + n_step, length) - later_t
  starts = np.concatenate([np.zeros_like(first_k), later_t])
  return starts, np.concatenate([first_k, later_k])


class _Held:
  """Where one held episode lives in the flat arrays."""

  __slots__ = (
    'store',
    'episode_id',
    'key',
    'obs_start',
    'step_start',
    'length',
    'trans_start',
    'num_trans',
    'nbytes',
    'success',
    'task',
  )

  def __init__(self, **fields):
    for name, value in fields.items():
      setattr(self, name, value)


_FIELD_NAMES = ('observation', 'action', 'reward', 'discount')


class StoreSampler:
  """Uniformly random n-step transitions from every episode in `stores`.

  Args:
    stores: one EpisodeStore or several (this run's and earlier ones').
    n_step: the N of the n-step transitions (>= 1).
    discount: the agent's discount g folded into multi-step returns.
    seed: an int seed, a np.random.Generator, or None.
    labeller: episode -> bool (successful or not); None for unlabelled transitions.
    spec: the program's environment spec (anything with `.observations` and
      `.actions` that have `.shape` and `.dtype`); None: the first usable
      episode sets the shapes.
    own_stores: how many of `stores`, from the first, are this program's own.
    memory_cap_bytes: the most episode data (arrays and per-transition index)
      to hold; None for no cap.
    balance_tasks: draw each transition's task uniformly among the held
      episodes' tasks (metadata 'task'; episodes without one are a task of
      their own), then a transition of that task uniformly; False: every held
      transition equally likely, so tasks in proportion to their data.
    place: episode -> None, or why not: puts each usable stored episode into the
      program's layout in place before it is checked against `spec` (several tasks'
      bodies in one layout, agents.common.task_layout); an episode it can't place is
      left out with its reason. None: episodes are used as stored.
    expert_labels_ok: also take episodes whose stored actions are an expert's labels,
      not the executed ones (metadata 'action_label' 'expert'): for a learner that
      imitates (behaviour cloning). Otherwise they are left out, with a warning: their
      rewards and next states follow other actions than the stored ones.

  Episodes are taken in by `refresh()` (call it now and then; `iterate` does).
  A stored episode the learner can't use is never fatal:

  * one that is unusable in itself (unreadable record, NaN or Inf, discounts
    outside [0, 1], metadata of the wrong type, see `episode_problem`) is
    quarantined in its store (`EpisodeStore.quarantine`, with the reason), so
    no reader draws on it again;
  * one that does not fit this program (observation or action shape unlike
    `spec`'s or the other episodes', a dtype that does not cast to theirs) is
    left out, with a warning; in the program's own stores, where it can only
    be poison, an episode unlike `spec` is quarantined too.

  An episode the labeller can't label although its metadata is well-formed
  (no `success` and no return threshold) raises ValueError: that is the
  program's settings, not the episode.

  Other dtypes of the same kind (float64 observations for a float32 program)
  are cast to the program's (or the first episode's). Episodes quarantined or
  deleted by anyone else are dropped at the next refresh.

  Memory: past `memory_cap_bytes` the sampler holds a uniform random subset of
  the episodes: each gets a random key when first seen, and it holds exactly
  the episodes whose key is below a threshold that it lowers (dropping the
  highest keys, down to 90% of the cap) whenever the cap is reached. So which
  episodes are held does not depend on their age or order, episodes past the
  threshold are never read, and transitions are drawn uniformly from those held.
  """

  def __init__(
    self,
    stores: Union[EpisodeStore, Sequence[EpisodeStore]],
    n_step: int,
    discount: float,
    seed: Union[None, int, np.random.Generator] = None,
    labeller: Optional[Callable[[Episode], bool]] = None,
    spec: Any = None,
    own_stores: int = 0,
    memory_cap_bytes: Optional[int] = DEFAULT_MEMORY_CAP_BYTES,
    balance_tasks: bool = False,
    place: Optional[Callable[[Episode], Optional[str]]] = None,
    expert_labels_ok: bool = False,
  ):
    if n_step < 1:
      raise ValueError(f'n_step must be at least 1, got {n_step}')
    if memory_cap_bytes is not None and memory_cap_bytes <= 0:
      raise ValueError(f'memory_cap_bytes must be positive (or None), got {memory_cap_bytes}')
    self._stores: List[EpisodeStore] = (
      [stores] if isinstance(stores, EpisodeStore) else list(stores)
    )
    self._n_step = int(n_step)
    # The adder's own cast: float32, so float32 rewards stay float32.
    self._discount = np.float32(discount)
    self._rng = np.random.default_rng(seed)
    self._keys = self._rng.spawn(1)[0]  # Own stream: sampling draws stay as they were.
    self._seen: List[Set[str]] = [set() for _ in self._stores]
    self._hidden_seen = [0] * len(self._stores)
    self._own = int(own_stores)
    self._cap = None if memory_cap_bytes is None else int(memory_cap_bytes)
    self._threshold = 1.0  # Episodes with a key below it are held.
    self._held: List[_Held] = []
    self._held_bytes = 0
    self._num_left_out = 0  # Over the cap.
    self._cap_announced = False
    self._shapes: Optional[Tuple] = None
    self._dtypes: Optional[List[np.dtype]] = None
    # A camera run's state features beside its images: their shape [F], () for none, None
    # until the spec or the first episode says.
    self._feature_shape: Optional[Tuple[int, ...]] = None
    observations = None if spec is None else spec.observations
    if isinstance(observations, dict):
      self._feature_shape = tuple(observations['features'].shape)
      observations = observations['pixels']
    elif spec is not None:
      self._feature_shape = ()
    if spec is not None:
      self._shapes = (tuple(observations.shape), tuple(spec.actions.shape))
    self._spec_given = spec is not None
    self._spec_dtypes = (
      None if spec is None else (np.dtype(observations.dtype), np.dtype(spec.actions.dtype))
    )
    self._labeller = labeller
    self._place = place
    self._expert_labels_ok = bool(expert_labels_ok)
    self._num_successes = 0
    self._balance = bool(balance_tasks)
    self._task_ids: Dict[str, int] = {}  # Task name -> its index in _task_of.
    self._by_task: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None
    self._reset_arrays()

  def _reset_arrays(self) -> None:
    self._observations = _Growable()
    self._features = _Growable(np.float32)  # Row for row with the observations, if any.
    self._actions = _Growable()
    self._rewards = _Growable()
    self._discounts = _Growable()
    self._start_step = _Growable(np.int64)  # Into the step arrays.
    self._start_obs = _Growable(np.int64)  # Into the observation array.
    self._num_steps = _Growable(np.int64)  # k of each transition.
    self._labels = _Growable(np.float32)  # Per transition: its episode's success label.
    self._task_of = _Growable(np.int32)  # Per transition: its episode's task (_task_ids).
    self._by_task = None  # Transitions grouped by task, made again when next sampled.

  @property
  def num_episodes(self) -> int:
    """Episodes held (all usable ones, unless over the memory cap)."""
    return len(self._held)

  @property
  def num_successes(self) -> int:
    """Held episodes that the labeller called successful (0 without a labeller)."""
    return self._num_successes

  @property
  def num_transitions(self) -> int:
    return self._num_steps.array.shape[0]

  @property
  def held_bytes(self) -> int:
    """Bytes of episode data held (what the memory cap bounds)."""
    return self._held_bytes

  @property
  def num_left_out(self) -> int:
    """Usable episodes seen but not held because of the memory cap."""
    return self._num_left_out

  def refresh(self) -> int:
    """Takes in episodes stored since the last call; returns how many are held."""
    new = 0
    left_out: Dict[str, List[str]] = {}  # Kind of problem -> ids.
    reasons: Dict[str, str] = {}
    for i, store in enumerate(self._stores):
      store.refresh()
      self._drop_hidden(i, store)
      for info in store.index():
        if info.episode_id in self._seen[i]:
          continue
        self._seen[i].add(info.episode_id)
        # Drawn before reading: an episode over the threshold costs no I/O.
        key = float(self._keys.random())
        if key >= self._threshold:
          self._num_left_out += 1
          continue
        episode, problem, poison = self._load(i, store, info.episode_id)
        if problem is not None:
          if poison:
            self._quarantine(store, info.episode_id, problem)
          else:
            left_out.setdefault(problem.split(':')[0], []).append(info.episode_id)
            reasons[info.episode_id] = problem
          continue
        if self._hold(i, info.episode_id, key, *episode):
          new += 1
    for ids in left_out.values():
      log.warning(
        'store sampler: %d episode(s) left out, e.g. %s: %s', len(ids), ids[0], reasons[ids[0]]
      )
    return new

  def _load(self, i: int, store: EpisodeStore, episode_id: str):
    """((episode, success), problem, poison): the episode ready to hold, or why not
    (poison: quarantine it; else only leave it out)."""
    try:
      episode = store.read(episode_id)
    except (CorruptRecordError, KeyError) as e:
      return None, f'unreadable: {e}', True
    problem = episode_problem(episode)
    if problem is not None:
      return None, problem, True
    if episode.metadata.get(ACTION_LABEL_KEY) == 'expert' and not self._expert_labels_ok:
      # Its transitions never happened: the reward and next state follow a noisier action.
      return None, LABELLED_ACTIONS_PROBLEM, False
    if self._place is not None:
      problem = self._place(episode)
      if problem is not None:  # Another run's task or body: fine, but not for this program.
        return None, f'does not fit the task layout: {problem}', False
    problem = self._fit(episode)
    if problem is not None:
      # Unlike the program's spec in the program's own store: poison (a robot's
      # wrong shapes). Elsewhere the episode may be fine for another program.
      return None, problem, self._spec_given and i < self._own
    success = None
    if self._labeller is not None:
      try:
        success = bool(self._labeller(episode))
      except ValueError as e:
        # The label's type was checked above (episode_problem); what is left is
        # the program's settings (no label and no return threshold): say so.
        self._seen[i].discard(episode_id)  # And again, should the caller retry.
        raise ValueError(f'episode {episode_id} can not be labelled: {e}') from e
    return (episode, success), None, False

  def _fit(self, episode: Episode) -> Optional[str]:
    """Casts `episode` to the held dtypes in place; what differs if it can't be."""
    arrays = (episode.observations, episode.actions, episode.rewards, episode.discounts)
    shapes = (episode.observations.shape[1:], episode.actions.shape[1:])
    against = 'does not match the program' if self._spec_given else 'does not match the others'
    if self._shapes is not None:
      diffs = [
        f'{n} shape {b} (expected {a})'
        for n, a, b in zip(_FIELD_NAMES, self._shapes, shapes)
        if tuple(a) != tuple(b)
      ]
      if diffs:
        return f'{against}: {", ".join(diffs)}'
    features = episode.observation_features
    feature_shape = () if features is None else tuple(features.shape[1:])
    if self._feature_shape is not None and feature_shape != self._feature_shape:
      have = f'shape {feature_shape}' if feature_shape else 'none'
      want = f'shape {self._feature_shape}' if self._feature_shape else 'none'
      return f'{against}: observation_features {have} (expected {want})'
    dtypes = self._dtypes
    if dtypes is None:
      dtypes = list(self._spec_dtypes or (arrays[0].dtype, arrays[1].dtype))
      dtypes += [arrays[2].dtype, arrays[3].dtype]
    for n, want, value in zip(_FIELD_NAMES, dtypes, arrays):
      if value.dtype != want and not np.can_cast(value.dtype, want, 'same_kind'):
        return f'{against}: {n} dtype {value.dtype} (expected {want})'
    if self._shapes is None:
      self._shapes = shapes
      self._feature_shape = feature_shape
    self._dtypes = dtypes
    if features is not None:
      episode.observation_features = features.astype(np.float32, copy=False)
    episode.observations, episode.actions, episode.rewards, episode.discounts = (
      value.astype(want, copy=False) for want, value in zip(dtypes, arrays)
    )
    return None

  def _quarantine(self, store: EpisodeStore, episode_id: str, reason: str) -> None:
    log.warning('store %s: episode %s quarantined: %s', store.directory, episode_id, reason)
    try:
      store.quarantine(episode_id, reason)
    except OSError as e:  # A read-only dataset: this sampler still leaves it out.
      log.warning(
        'store %s: could not list episode %s in the quarantine log (%s); left out here only',
        store.directory,
        episode_id,
        e,
      )

  def _episode_bytes(self, episode: Episode, num_trans: int) -> int:
    # Start step, start observation and k (int64), the task (int32), a label (float32).
    per_transition = 3 * 8 + 4 + (4 if self._labeller is not None else 0)
    arrays = (episode.observations, episode.actions, episode.rewards, episode.discounts)
    features = 0 if episode.observation_features is None else episode.observation_features.nbytes
    return sum(a.nbytes for a in arrays) + features + num_trans * per_transition

  def _hold(
    self, store: int, episode_id: str, key: float, episode: Episode, success: Optional[bool]
  ) -> bool:
    """Adds an episode to the held arrays (then evicts if over the cap); whether it stays."""
    starts, steps = transition_starts(episode.length, self._n_step)
    nbytes = self._episode_bytes(episode, starts.shape[0])
    if self._cap is not None and nbytes > self._cap:
      log.warning(
        'store sampler: episode %s alone (%d bytes) is over the memory cap (%d bytes); left out',
        episode_id,
        nbytes,
        self._cap,
      )
      self._num_left_out += 1
      return False
    held = _Held(
      store=store,
      episode_id=episode_id,
      key=key,
      obs_start=self._observations.array.shape[0],
      step_start=self._actions.array.shape[0],
      length=episode.length,
      trans_start=self.num_transitions,
      num_trans=starts.shape[0],
      nbytes=nbytes,
      success=success,
      task=self._task_ids.setdefault(str(episode.metadata.get('task', '')), len(self._task_ids)),
    )
    if success is not None:
      self._labels.extend(np.full(starts.shape, float(success), np.float32))
      self._num_successes += int(success)
    self._start_step.extend(held.step_start + starts)
    self._start_obs.extend(held.obs_start + starts)
    self._num_steps.extend(steps)
    self._task_of.extend(np.full(starts.shape, held.task, np.int32))
    self._by_task = None
    self._observations.extend(episode.observations)
    if episode.observation_features is not None:
      self._features.extend(episode.observation_features)
    self._actions.extend(episode.actions)
    self._rewards.extend(episode.rewards)
    self._discounts.extend(episode.discounts)
    self._held.append(held)
    self._held_bytes += nbytes
    if self._cap is not None and self._held_bytes > self._cap:
      self._evict()
      return held in self._held
    return True

  def _evict(self) -> None:
    """Lowers the threshold until what is held fits in 90% of the cap."""
    target = _LOW_WATER * self._cap
    remaining = self._held_bytes
    evicted = set()
    for held in sorted(self._held, key=lambda h: h.key, reverse=True):
      if remaining <= target:
        break
      evicted.add(id(held))
      remaining -= held.nbytes
      self._threshold = held.key
    self._num_left_out += len(evicted)
    self._keep([h for h in self._held if id(h) not in evicted])
    if not self._cap_announced:
      self._cap_announced = True
      log.warning(
        'store sampler: the stored episodes exceed the memory cap (%.1f MB): training on a '
        'uniform random subset of them (%d episodes held now; the rest stay on disk)',
        self._cap / 2**20,
        len(self._held),
      )

  def _drop_hidden(self, i: int, store: EpisodeStore) -> None:
    """Drops held episodes of store i that were quarantined or deleted since."""
    hidden = store.quarantined()
    hidden.update(store.deleted())
    if len(hidden) == self._hidden_seen[i]:
      return
    self._hidden_seen[i] = len(hidden)
    self._seen[i].update(hidden)
    keep = [h for h in self._held if h.store != i or h.episode_id not in hidden]
    if len(keep) != len(self._held):
      self._keep(keep)

  def _keep(self, keep: List[_Held]) -> None:
    """Rebuilds the flat arrays with only the episodes in `keep` (in order)."""
    old = (
      self._observations.array,
      self._actions.array,
      self._rewards.array,
      self._discounts.array,
      self._start_step.array,
      self._start_obs.array,
      self._num_steps.array,
      self._labels.array,
      self._features.array,
      self._task_of.array,
    )
    observations, actions, rewards, discounts, start_step, start_obs, num_steps, labels = old[:8]
    self._reset_arrays()
    self._held = []
    self._held_bytes = 0
    self._num_successes = 0
    if not keep:
      return
    parts: List[List[np.ndarray]] = [[] for _ in old]
    obs_at = step_at = trans_at = 0
    for held in keep:
      steps = slice(held.step_start, held.step_start + held.length)
      trans = slice(held.trans_start, held.trans_start + held.num_trans)
      parts[0].append(observations[held.obs_start : held.obs_start + held.length + 1])
      parts[1].append(actions[steps])
      parts[2].append(rewards[steps])
      parts[3].append(discounts[steps])
      parts[4].append(start_step[trans] - held.step_start + step_at)
      parts[5].append(start_obs[trans] - held.obs_start + obs_at)
      parts[6].append(num_steps[trans])
      if held.success is not None:
        parts[7].append(labels[trans])
        self._num_successes += int(held.success)
      if self._feature_shape:
        parts[8].append(old[8][held.obs_start : held.obs_start + held.length + 1])
      parts[9].append(old[9][trans])
      held.obs_start, held.step_start, held.trans_start = obs_at, step_at, trans_at
      obs_at += held.length + 1
      step_at += held.length
      trans_at += held.num_trans
      self._held.append(held)
      self._held_bytes += held.nbytes
    growables = (
      self._observations,
      self._actions,
      self._rewards,
      self._discounts,
      self._start_step,
      self._start_obs,
      self._num_steps,
      self._labels,
      self._features,
      self._task_of,
    )
    for growable, pieces in zip(growables, parts):
      if pieces:
        growable.extend(np.concatenate(pieces))

  def _gather(self, which: np.ndarray) -> types.Transition:
    step = self._start_step.array[which]
    obs = self._start_obs.array[which]
    k = self._num_steps.array[which]
    rewards, discounts = self._rewards.array, self._discounts.array
    # The adder's loop, vectorised over the batch: the same operations in the
    # same order and dtypes, masked where a transition has fewer steps.
    total_discount = discounts[step].copy()
    n_step_return = rewards[step].copy()
    for i in range(1, self._n_step):
      more = k > i
      if not more.any():
        break
      j = np.where(more, step + i, step)
      scaled = (total_discount * self._discount).astype(total_discount.dtype, copy=False)
      summed = (n_step_return + rewards[j] * scaled).astype(n_step_return.dtype, copy=False)
      scaled = (scaled * discounts[j]).astype(total_discount.dtype, copy=False)
      n_step_return = np.where(more, summed, n_step_return)
      total_discount = np.where(more, scaled, total_discount)
    # The adder's table signature gives rewards the reward/discount result type.
    reward_dtype = np.result_type(rewards.dtype, discounts.dtype)
    observations = self._observations.array
    extras: Any = ()
    if self._labeller is not None:
      extras = {'success': self._labels.array[which]}
    observation, next_observation = observations[obs], observations[obs + k]
    if self._feature_shape:  # As the environment gave them: the features beside the images.
      features = self._features.array
      observation = {'features': features[obs], 'pixels': observation}
      next_observation = {'features': features[obs + k], 'pixels': next_observation}
    return types.Transition(
      observation=observation,
      action=self._actions.array[step],
      reward=n_step_return.astype(reward_dtype, copy=False),
      discount=total_discount,
      next_observation=next_observation,
      extras=extras,
    )

  def sample(self, batch_size: int) -> types.Transition:
    """A batch of `batch_size` transitions drawn with replacement: uniformly, or with
    `balance_tasks` a uniform task and then a uniform transition of it."""
    if self.num_transitions == 0:
      raise ValueError('no stored transitions to sample yet (call refresh())')
    if not self._balance:
      return self._gather(self._rng.integers(0, self.num_transitions, size=batch_size))
    order, starts, counts = self._grouped_by_task()
    task = self._rng.integers(0, counts.shape[0], size=batch_size)
    within = (self._rng.random(batch_size) * counts[task]).astype(np.int64)
    return self._gather(order[starts[task] + within])

  def task_transitions(self) -> Dict[str, int]:
    """Held transitions per task (the metadata 'task'; '' for episodes without one)."""
    counts = np.bincount(self._task_of.array, minlength=len(self._task_ids))
    return {name: int(counts[i]) for name, i in self._task_ids.items() if counts[i]}

  def _grouped_by_task(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transition indices grouped by task, each held task's first position in them, its
    count), for the tasks with transitions; made again after the held episodes change."""
    if self._by_task is None:
      task_of = self._task_of.array
      order = np.argsort(task_of, kind='stable')
      counts = np.bincount(task_of, minlength=len(self._task_ids))
      starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
      held = counts > 0
      self._by_task = (order, starts[held], counts[held])
    return self._by_task

  def all_transitions(self) -> types.Transition:
    """Every transition the sampler can draw, once each, as one batch."""
    if self.num_transitions == 0:
      raise ValueError('no stored transitions yet (call refresh())')
    return self._gather(np.arange(self.num_transitions))

  def iterate(
    self, batch_size: int, refresh_every_s: float = 5.0, poll_s: float = 0.5
  ) -> Iterator[types.Transition]:
    """Endless batches, taking in new episodes every `refresh_every_s`; waits
    (polling every `poll_s`) while the stores are empty."""
    next_refresh = 0.0
    while True:
      now = time.monotonic()
      if now >= next_refresh:
        self.refresh()
        next_refresh = now + refresh_every_s
      if self.num_transitions == 0:
        time.sleep(poll_s)
        next_refresh = 0.0
        continue
      yield self.sample(batch_size)
