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

The sampler holds every stored episode in memory (growable flat arrays), so
sampling a batch is a few vectorised gathers whatever the store's size.
"""

import time
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from acme import types

from agents.common.logs import get_logger
from launch.store.episodes import CorruptRecordError, Episode, EpisodeStore

log = get_logger('store')


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
        buffer[:self._size] = self._buffer[:self._size]
      self._buffer = buffer
    self._buffer[self._size:needed] = values
    self._size = needed

  @property
  def array(self) -> np.ndarray:
    if self._buffer is None:
      return np.empty((0,), self._dtype)
    return self._buffer[:self._size]


def _spec(episode: Episode) -> Tuple:
  return (episode.observations.shape[1:], episode.observations.dtype,
          episode.actions.shape[1:], episode.actions.dtype,
          episode.rewards.dtype, episode.discounts.dtype)


def transition_starts(length: int, n_step: int) -> Tuple[np.ndarray, np.ndarray]:
  """(start step t, number of steps k) of every transition the n-step adder
  writes for an episode of `length` steps."""
  first_k = np.arange(1, min(n_step, length) + 1)
  later_t = np.arange(1, length)
  later_k = np.minimum(later_t + n_step, length) - later_t
  starts = np.concatenate([np.zeros_like(first_k), later_t])
  return starts, np.concatenate([first_k, later_k])


class StoreSampler:
  """Uniformly random n-step transitions from every episode in `stores`.

  Args:
    stores: one EpisodeStore or several (this run's and earlier ones').
    n_step: the N of the n-step transitions (>= 1).
    discount: the agent's discount g folded into multi-step returns.
    seed: an int seed, a np.random.Generator, or None.
    labeller: episode -> bool (successful or not); None for unlabelled transitions.

  Episodes are taken in by `refresh()` (call it now and then; `iterate` does).
  All episodes must share observation/action shapes and dtypes.
  """

  def __init__(self, stores: Union[EpisodeStore, Sequence[EpisodeStore]], n_step: int,
               discount: float, seed: Union[None, int, np.random.Generator] = None,
               labeller: Optional[Callable[[Episode], bool]] = None):
    if n_step < 1:
      raise ValueError(f'n_step must be at least 1, got {n_step}')
    self._stores: List[EpisodeStore] = (
        [stores] if isinstance(stores, EpisodeStore) else list(stores))
    self._n_step = int(n_step)
    # The adder's own cast: float32, so float32 rewards stay float32.
    self._discount = np.float32(discount)
    self._rng = np.random.default_rng(seed)
    self._taken = [0] * len(self._stores)  # Index entries taken in, per store.
    self._spec: Optional[Tuple] = None
    self._observations = _Growable()
    self._actions = _Growable()
    self._rewards = _Growable()
    self._discounts = _Growable()
    self._start_step = _Growable(np.int64)  # Into the step arrays.
    self._start_obs = _Growable(np.int64)  # Into the observation array.
    self._num_steps = _Growable(np.int64)  # k of each transition.
    self._num_episodes = 0
    self._labeller = labeller
    self._labels = _Growable(np.float32)  # Per transition: its episode's success label.
    self._num_successes = 0

  @property
  def num_episodes(self) -> int:
    return self._num_episodes

  @property
  def num_successes(self) -> int:
    """Episodes taken in that the labeller called successful (0 without a labeller)."""
    return self._num_successes

  @property
  def num_transitions(self) -> int:
    return self._num_steps.array.shape[0]

  def refresh(self) -> int:
    """Takes in episodes stored since the last call; returns how many."""
    new = 0
    for i, store in enumerate(self._stores):
      store.refresh()
      infos = store.index()
      for info in infos[self._taken[i]:]:
        try:
          episode = store.read(info.episode_id)
        except CorruptRecordError as e:
          log.warning('store %s: episode %s unreadable (%s); not sampled', store.directory,
                      info.episode_id, e)
          continue
        self._add(episode, info.episode_id)
        new += 1
      self._taken[i] = len(infos)
    return new

  def _add(self, episode: Episode, episode_id: str) -> None:
    spec = _spec(episode)
    if self._spec is None:
      self._spec = spec
    elif spec != self._spec:
      names = ('observation shape', 'observation dtype', 'action shape', 'action dtype',
               'reward dtype', 'discount dtype')
      diffs = [f'{n} {b} (expected {a})' for n, a, b in zip(names, self._spec, spec) if a != b]
      raise ValueError(f'episode {episode_id} does not match the others: {", ".join(diffs)}')
    success = None
    if self._labeller is not None:
      try:
        success = bool(self._labeller(episode))
      except ValueError as e:
        raise ValueError(f'episode {episode_id} can not be labelled: {e}') from e
    starts, steps = transition_starts(episode.length, self._n_step)
    if success is not None:
      self._labels.extend(np.full(starts.shape, float(success), np.float32))
      self._num_successes += int(success)
    self._start_step.extend(self._actions.array.shape[0] + starts)
    self._start_obs.extend(self._observations.array.shape[0] + starts)
    self._num_steps.extend(steps)
    self._observations.extend(episode.observations)
    self._actions.extend(episode.actions)
    self._rewards.extend(episode.rewards)
    self._discounts.extend(episode.discounts)
    self._num_episodes += 1

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
    return types.Transition(
        observation=observations[obs],
        action=self._actions.array[step],
        reward=n_step_return.astype(reward_dtype, copy=False),
        discount=total_discount,
        next_observation=observations[obs + k],
        extras=extras)

  def sample(self, batch_size: int) -> types.Transition:
    """A batch of `batch_size` transitions drawn uniformly with replacement."""
    if self.num_transitions == 0:
      raise ValueError('no stored transitions to sample yet (call refresh())')
    return self._gather(self._rng.integers(0, self.num_transitions, size=batch_size))

  def all_transitions(self) -> types.Transition:
    """Every transition the sampler can draw, once each, as one batch."""
    if self.num_transitions == 0:
      raise ValueError('no stored transitions yet (call refresh())')
    return self._gather(np.arange(self.num_transitions))

  def iterate(self, batch_size: int, refresh_every_s: float = 5.0,
              poll_s: float = 0.5) -> Iterator[types.Transition]:
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
