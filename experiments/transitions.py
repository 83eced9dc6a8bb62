"""One-step transitions of stored or random-action episodes, and endless batches of them,
for the benchmarks that train learners in one process (experiments.planning_benchmark,
transfer_benchmark, multidomain_benchmark)."""

from typing import Callable, Dict, Iterator, Optional, Sequence

import numpy as np

FIELDS = ('observation', 'action', 'reward', 'next_observation')


def store_transitions(path: str, limit: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Every transition of the first `limit` episodes (all by default) of an episode store,
  in the order the store lists them."""
  from launch.store.episodes import EpisodeStore

  store = EpisodeStore(path)
  infos = store.index()[:limit]
  if not infos:
    raise ValueError(f'{path}: the store holds no episodes')
  parts = {name: [] for name in FIELDS}
  for info in infos:
    episode = store.read(info.episode_id)
    parts['observation'].append(episode.observations[:-1])
    parts['next_observation'].append(episode.observations[1:])
    parts['action'].append(episode.actions)
    parts['reward'].append(episode.rewards)
  return {name: np.concatenate(parts[name]).astype(np.float32) for name in FIELDS}


def random_transitions(
  env_factory: Callable[[int], object], episodes: int, seed: int
) -> Dict[str, np.ndarray]:
  """Every transition of `episodes` episodes of uniformly random actions, episode i in
  `env_factory(seed + i)` (empty arrays for none)."""
  rng = np.random.default_rng(seed)
  parts = {name: [] for name in FIELDS}
  for i in range(episodes):
    env = env_factory(seed + i)
    spec = env.action_spec()
    timestep = env.reset()
    while not timestep.last():
      action = rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(np.float32)
      following = env.step(action)
      values = (timestep.observation, action, following.reward, following.observation)
      for name, value in zip(FIELDS, values):
        parts[name].append(value)
      timestep = following
  return {name: np.asarray(v, np.float32) for name, v in parts.items()}


def concatenate(datasets: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  """The transitions of several datasets as one."""
  return {name: np.concatenate([d[name] for d in datasets]) for name in FIELDS}


def batches(
  data: Dict[str, np.ndarray],
  batch_size: int,
  seed: int,
  mix: Optional[Dict[str, np.ndarray]] = None,
  mix_fraction: float = 0.0,
) -> Iterator:
  """Endless acme Transitions of `batch_size` drawn uniformly with replacement.

  With `mix`, the last round(mix_fraction * batch_size) rows of every batch come from it
  instead: earlier data rehearsed while fine-tuning on a little new data.
  """
  from acme import types

  if not 0.0 <= mix_fraction < 1.0:
    raise ValueError(f'mix_fraction must be in [0, 1), got {mix_fraction}')
  rng = np.random.default_rng(seed)
  n_mix = round(mix_fraction * batch_size) if mix is not None else 0
  sources = [(data, batch_size - n_mix)] + ([(mix, n_mix)] if n_mix else [])
  while True:
    picks = [(d, rng.integers(0, len(d['reward']), m)) for d, m in sources]
    part = {k: np.concatenate([d[k][i] for d, i in picks]) for k in FIELDS}
    yield types.Transition(
      part['observation'],
      part['action'],
      part['reward'],
      np.ones(batch_size, np.float32),
      part['next_observation'],
    )
