"""The durable experience store: every completed episode, kept across runs.

`launch.store.episodes` holds the store itself (EpisodeStore, EpisodeWriter,
Episode); `launch.store.sampling.StoreSampler` draws n-step transitions from
it. Only the former is re-exported here, so processes that just write
episodes (actors, robots) don't import acme.
"""

from launch.store.episodes import (
  CorruptRecordError,
  Episode,
  EpisodeInfo,
  EpisodeStore,
  EpisodeWriter,
  StoreError,
  WriterBusyError,
  validate_episode,
)

__all__ = [
  'CorruptRecordError',
  'Episode',
  'EpisodeInfo',
  'EpisodeStore',
  'EpisodeWriter',
  'StoreError',
  'WriterBusyError',
  'validate_episode',
]
