"""Learner batches drawn from the online replay table and the durable store at a fixed ratio.

Attached robots' experience (the external replay table) takes a further,
fixed share of each batch while that table holds data (`ExternalShare`).
"""

import time
from typing import Any, Callable, Iterator, Optional

import numpy as np
import tree
from acme import types

from agents.common.logs import get_logger


def _transition(batch: Any) -> types.Transition:
  """The five fields both sources share (replay samples carry `.data` and extras)."""
  t = getattr(batch, 'data', batch)
  return types.Transition(
    observation=t.observation,
    action=t.action,
    reward=t.reward,
    discount=t.discount,
    next_observation=t.next_observation,
  )


log = get_logger('mixing')


class ExternalShare:
  """`batch_size` transitions per batch from the external table while it holds data.

  The external table only fills when a robot is attached, and sampling an
  empty table would wait on its rate limiter, so its size is looked up every
  `check_every_s` (`table_size`, which returns 0 when it can't tell) until it
  holds something; until then `fallback` (the main table, same batch size)
  fills the share. Iterators are made on first use: a dataset prefetches as
  soon as it exists. `on_active(size)` is called once, when the switch happens.
  """

  def __init__(
    self,
    make_external: Callable[[], Iterator[Any]],
    make_fallback: Callable[[], Iterator[Any]],
    table_size: Callable[[], int],
    batch_size: int,
    check_every_s: float = 2.0,
    on_active: Optional[Callable[[int], None]] = None,
  ):
    if batch_size < 1:
      raise ValueError(f'batch_size must be at least 1, got {batch_size}')
    self._make_external = make_external
    self._make_fallback = make_fallback
    self._table_size = table_size
    self.batch_size = batch_size
    self._check_every = check_every_s
    self._on_active = on_active
    self._next_check = 0.0
    self._external: Optional[Iterator[Any]] = None
    self._fallback: Optional[Iterator[Any]] = None

  @property
  def active(self) -> bool:
    """Whether the share now comes from the external table."""
    return self._external is not None

  def next(self) -> types.Transition:
    if self._external is None and time.monotonic() >= self._next_check:
      self._next_check = time.monotonic() + self._check_every
      size = self._table_size()
      if size > 0:
        log.info(
          'external table holds %d items: %d of each batch come from it now', size, self.batch_size
        )
        if self._on_active is not None:
          self._on_active(size)
        self._external = self._make_external()
    if self._external is not None:
      return _transition(next(self._external))
    if self._fallback is None:
      self._fallback = self._make_fallback()
    return _transition(next(self._fallback))


class MixedBatches:
  """Iterator of Transition batches: `store_batch` from stored episodes, the rest from replay.

  Ends (StopIteration) like a rate-limited Reverb dataset when the store has
  nothing to sample for `wait_timeout_s`, so the learner can check for
  shutdown and make a fresh iterator.

  `store_fallback` (online modes): while the store holds nothing, as in a fresh run's own
  store, the store share comes from this replay iterator instead (made on first use, of
  `store_batch` items). Waiting would stall the run: the actors' inserts wait on the
  learner's samples, so no episode would ever be stored. While it lends its share the store
  is looked at every `empty_refresh_every_s` (an empty store's refresh is a directory
  listing): a short run's first episodes may end seconds before its last.
  """

  def __init__(
    self,
    replay: Optional[Iterator[Any]],
    sampler: Optional[Any],
    store_batch: int,
    wait_timeout_s: float = 2.0,
    refresh_every_s: float = 5.0,
    external: Optional[ExternalShare] = None,
    store_fallback: Optional[Callable[[], Iterator[Any]]] = None,
    empty_refresh_every_s: float = 0.5,
  ):
    if replay is None and external is None and (sampler is None or store_batch <= 0):
      raise ValueError('a learner needs a replay iterator or a store sampler')
    if store_batch > 0 and sampler is None:
      raise ValueError(f'store_batch={store_batch} needs a store sampler')
    self._replay = replay
    self._sampler = sampler
    self._store_batch = store_batch
    self._timeout = wait_timeout_s
    self._refresh_every = refresh_every_s
    self._empty_refresh_every = min(empty_refresh_every_s, refresh_every_s)
    self._next_refresh = 0.0
    self._external = external
    self._make_store_fallback = store_fallback
    self._store_fallback: Optional[Iterator[Any]] = None

  def __iter__(self) -> 'MixedBatches':
    return self

  def _store_part(self) -> types.Transition:
    deadline = time.monotonic() + self._timeout
    while True:
      now = time.monotonic()
      if now >= self._next_refresh:
        self._sampler.refresh()
        self._next_refresh = now + self._refresh_every
      if self._sampler.num_transitions > 0:
        if self._store_fallback is not None:
          log.info('the store holds episodes: its share of each batch comes from it now')
          # Dropped, not kept idle: a dataset prefetches, and its samples count against
          # replay's rate limiter.
          self._store_fallback = None
          self._make_store_fallback = None
        # Kept whole: a labelling sampler's extras (PMPO's success labels) ride along.
        return self._sampler.sample(self._store_batch)
      if self._make_store_fallback is not None:
        if self._store_fallback is None:
          log.info('the store holds no episode yet: its share comes from replay until it does')
          self._store_fallback = self._make_store_fallback()
        self._next_refresh = min(self._next_refresh, now + self._empty_refresh_every)
        return _transition(next(self._store_fallback))
      if now >= deadline:
        raise StopIteration
      self._next_refresh = 0.0  # Nothing stored yet: look again soon.
      time.sleep(0.2)

  def __next__(self) -> types.Transition:
    parts = []
    if self._store_batch > 0:
      parts.append(self._store_part())
    if self._replay is not None:
      parts.append(_transition(next(self._replay)))
    if self._external is not None:
      parts.append(self._external.next())
    if len(parts) == 1:
      return parts[0]
    if any(p.extras != () for p in parts):
      # Replay carries no labels: a mixed batch would lose them for part of the batch.
      raise ValueError(
        'stored transitions carry extras (success labels) that the replay '
        'share lacks: labelled data needs every batch from the store'
      )
    # Field by field; a camera run's observations are {'features', 'pixels'} in every part.
    fields = [
      tree.map_structure(lambda *xs: np.concatenate(xs), *(p[i] for p in parts)) for i in range(5)
    ]
    return types.Transition(*fields)
