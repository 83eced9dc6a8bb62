"""Tests for the generalist's training windows (launch.store.windows) on a real episode store.

The store is written with the project's own EpisodeStore; every window is then traced back
to the stored episodes it was cut from (random observations make every timestep's tokens
unique), so the tests check what a window holds, not how the sampler cut it.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from typing import List, Tuple

import numpy as np
import pytest

from launch.store.episodes import Episode, EpisodeStore
from launch.store.windows import WindowConfig, WindowSampler, best_demonstrations, window_batches
from networks.tokenizer import TimestepLayout, Vocabulary

VOCAB = Vocabulary(num_tasks=2)
# Two bodies: 7 and 6 tokens a timestep.
LAYOUTS = {
  'walker': TimestepLayout((2, 1), action_dim=3, vocab=VOCAB),
  'cart': TimestepLayout((4,), action_dim=1, vocab=VOCAB),
}
LENGTHS = {'walker': (5, 9, 12, 2), 'cart': (4, 8)}
BATCH = 64


def _episode(task: str, i: int, length: int, obs_dim=None) -> Episode:
  layout = LAYOUTS.get(task, LAYOUTS['cart'])
  rng = np.random.default_rng(zlib.crc32(f'{task}/{i}'.encode()))
  obs_dim = obs_dim or layout.obs_dim
  return Episode(
    observations=rng.normal(0.0, 3.0, (length + 1, obs_dim)).astype(np.float32),
    actions=rng.uniform(-1.0, 1.0, (length, layout.action_dim)).astype(np.float32),
    rewards=np.zeros(length, np.float32),
    discounts=np.ones(length, np.float32),
    metadata={'task': task, 'source': 'test'},
  )


def _tokens(task: str) -> List[np.ndarray]:
  """Each stored episode of `task` as [T, n] tokens, worked out from the episodes."""
  layout = LAYOUTS[task]
  out = []
  for i, length in enumerate(LENGTHS[task]):
    e = _episode(task, i, length)
    out.append(layout.timestep_tokens(e.observations[:-1], e.actions))
  return out


@pytest.fixture
def store(tmp_path) -> EpisodeStore:
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor_0') as writer:
    for task, lengths in LENGTHS.items():
      for i, length in enumerate(lengths):
        writer.append(_episode(task, i, length))
    writer.append(_episode('other', 0, 5))  # a task the sampler does not serve
    writer.append(_episode('walker', 99, 5, obs_dim=5))  # the wrong body for its task
  return store


def _find(rows: np.ndarray, episodes: List[np.ndarray]) -> List[Tuple[int, int]]:
  """Every (episode, start) whose timesteps from `start` are `rows`."""
  return [
    (e, s)
    for e, tokens in enumerate(episodes)
    for s in range(len(tokens) - len(rows) + 1)
    if np.array_equal(tokens[s : s + len(rows)], rows)
  ]


def test_prompted_windows_hold_a_prompt_then_the_episode_then_padding(store, caplog):
  config = WindowConfig(length=40, conditioning='prompt', prompt_tokens=16)
  sampler = WindowSampler(store, LAYOUTS, config, seed=0)
  with caplog.at_level(logging.WARNING):
    assert sampler.refresh() == 6
  assert '2 episode(s) left out' in caplog.text
  assert sampler.num_episodes('walker') == 4 and sampler.num_episodes('cart') == 2
  batch = sampler.sample(BATCH)
  assert batch.tokens.shape == batch.positions.shape == batch.loss_mask.shape == (BATCH, 40)
  assert batch.tokens.dtype == batch.positions.dtype == np.int32
  assert set(batch.task) == {0, 1}  # both bodies in one batch

  from_end = 0
  for b in range(BATCH):
    task = sampler.tasks[batch.task[b]]
    layout, episodes = LAYOUTS[task], _tokens(task)
    n = layout.num_tokens
    tokens, positions, mask = batch.tokens[b], batch.positions[b], batch.loss_mask[b]
    real = int(np.sum(tokens != VOCAB.padding))
    assert np.all(tokens[real:] == VOCAB.padding) and np.all(positions[real:] == 0)
    assert real % n == 0 and not mask[real:].any()
    # The prompt: two whole timesteps (16 tokens of room) of one stored episode of the task.
    prompt = tokens[: 2 * n].reshape(2, n)
    prompt_at = _find(prompt, episodes)
    if not prompt_at:  # a prompt from the 2-step episode fits whole in the window too
      raise AssertionError(f'window {b}: the prompt is no stored {task} episode')
    # The body: as many whole timesteps of one episode as fit (or the whole episode).
    body = tokens[2 * n : real].reshape(-1, n)
    body_at = _find(body, episodes)
    assert len(body_at) == 1, (b, task)
    ((episode, _),) = body_at
    assert len(body) == min((40 - 2 * n) // n, len(episodes[episode]))
    # Another episode of the same task than the body's.
    assert all(e != episode for e, _ in prompt_at)
    e, s = prompt_at[0]
    from_end += s + 2 == len(episodes[e])
    # Positions within the timestep everywhere; targets at the body's action tokens only.
    np.testing.assert_array_equal(positions[:real], np.tile(layout.positions, real // n))
    np.testing.assert_array_equal(
      mask[:real], np.concatenate([np.zeros(2 * n, bool), np.tile(layout.action_mask, len(body))])
    )
  # Half the prompts come from the end of their episode, the others from anywhere.
  assert 0.3 * BATCH < from_end < 0.9 * BATCH


def test_task_id_windows_start_with_the_task_token(store):
  config = WindowConfig(length=30, conditioning='task_id')
  sampler = WindowSampler(store, LAYOUTS, config, seed=1)
  sampler.refresh()
  batch = sampler.sample(16)
  for b in range(16):
    task = sampler.tasks[batch.task[b]]
    layout = LAYOUTS[task]
    assert batch.tokens[b, 0] == VOCAB.task_token(batch.task[b])
    assert batch.positions[b, 0] == 0 and not batch.loss_mask[b, 0]
    real = int(np.sum(batch.tokens[b] != VOCAB.padding))
    body = batch.tokens[b, 1:real].reshape(-1, layout.num_tokens)
    assert len(_find(body, _tokens(task))) == 1
    assert batch.loss_mask[b, 1:real].sum() == len(body) * layout.action_dim
  with pytest.raises(ValueError, match='num_tasks >= 2'):
    layouts = {k: TimestepLayout(v.obs_group_sizes, v.action_dim) for k, v in LAYOUTS.items()}
    WindowSampler(store, layouts, config)


def test_windows_of_k_timesteps_hold_k_and_padding(store):
  """timesteps=1 (no history): the task token, one stored timestep, padding; the walker's
  7 tokens and the cart's 6 both fit a length of 8 once."""
  config = WindowConfig(length=30, conditioning='task_id', timesteps=1)
  sampler = WindowSampler(store, LAYOUTS, config, seed=3)
  sampler.refresh()
  batch = sampler.sample(32)
  for b in range(32):
    task = sampler.tasks[batch.task[b]]
    layout = LAYOUTS[task]
    real = int(np.sum(batch.tokens[b] != VOCAB.padding))
    assert real == 1 + layout.num_tokens
    assert len(_find(batch.tokens[b, 1:real][None], _tokens(task))) >= 1
    assert batch.loss_mask[b].sum() == layout.action_dim
  # k = 3: three timesteps, or all of an episode shorter than that (the walker's 2-step one).
  sampler = WindowSampler(store, LAYOUTS, dataclasses.replace(config, timesteps=3), seed=4)
  sampler.refresh()
  batch = sampler.sample(256)
  steps = [
    int(m.sum()) // LAYOUTS[sampler.tasks[t]].action_dim
    for m, t in zip(batch.loss_mask, batch.task)
  ]
  assert set(steps) == {2, 3}
  with pytest.raises(ValueError, match='timesteps >= 0'):
    WindowConfig(length=10, timesteps=-1)


def test_fresh_episodes_join_on_refresh(tmp_path):
  """Online fine-tuning: episodes the actors store while the learner runs are drawn too."""
  store = EpisodeStore(tmp_path / 'store')
  config = WindowConfig(length=24, conditioning='prompt', prompt_tokens=12)
  sampler = WindowSampler(store, {'cart': LAYOUTS['cart']}, config, seed=2)
  sampler.refresh()
  with pytest.raises(ValueError, match='no stored episode'):
    sampler.sample(1)
  with store.writer('actor_0') as writer:
    writer.append(_episode('cart', 0, 4))
  batches = sampler.iterate(batch_size=4, refresh_every=2)
  # The only episode prompts itself.
  first = next(batches)
  cart = _tokens('cart')
  assert all(_find(t[:12].reshape(2, 6), cart[:1]) for t in first.tokens)
  with store.writer('actor_1') as writer:
    writer.append(_episode('cart', 1, 8))
  next(batches)
  assert sampler.num_episodes() == 1
  seen = set()
  for _ in range(6):  # past the next refresh
    for t in next(batches).tokens:
      seen.add(_find(t[12:24].reshape(2, 6), cart)[0][0])
  assert sampler.num_episodes() == 2 and seen == {0, 1}


def test_window_config_is_checked(store):
  with pytest.raises(ValueError, match='conditioning'):
    WindowConfig(length=10, conditioning='goal')
  with pytest.raises(ValueError, match="no room for one timestep of task 'walker'"):
    WindowSampler(store, LAYOUTS, WindowConfig(length=20, prompt_tokens=14))


def test_window_batches_wait_for_a_first_episode_then_serve(tmp_path):
  """What a learner node hands an agent: on an empty store it ends after its wait (the node
  checks for shutdown, then asks the same iterator again), and serves once one is stored."""
  store = EpisodeStore(tmp_path / 'store')
  fields = {'length': 24, 'conditioning': 'prompt', 'prompt_tokens': 12}
  batches = window_batches(
    [store.directory], {'cart': LAYOUTS['cart']}, fields, 4, wait_timeout_s=0.1, poll_s=0.05
  )
  with pytest.raises(StopIteration):
    next(batches)
  with store.writer('actor_0') as writer:
    writer.append(_episode('cart', 0, 4))
  batch = next(batches)
  assert batch.tokens.shape == (4, 24) and set(batch.task) == {0}
  assert batches.sampler.num_episodes() == 1


@pytest.mark.parametrize('balance, walker_share', [(True, 0.5), (False, 28 / 40)])
def test_batches_balance_tasks_or_follow_their_stored_timesteps(store, balance, walker_share):
  # walker holds 28 stored timesteps, cart 12.
  config = WindowConfig(length=30, conditioning='none', balance_tasks=balance)
  sampler = WindowSampler(store, LAYOUTS, config, seed=3)
  sampler.refresh()
  tasks = sampler.sample(1000).task
  share = np.mean(tasks == sampler.tasks.index('walker'))
  assert abs(share - walker_share) < 0.06  # about 4 standard errors


def test_the_best_demonstration_is_the_highest_returning_episode_of_the_task(tmp_path):
  def with_return(task, i, reward):
    e = _episode(task, i, 6)
    return dataclasses.replace(e, rewards=np.full(6, reward, np.float32))

  first, second = EpisodeStore(tmp_path / 'a'), EpisodeStore(tmp_path / 'b')
  with first.writer('actor_0') as writer:
    writer.append(with_return('cart', 0, 1.0))
    writer.append(with_return('walker', 0, 9.0))  # Another task's better episode.
  with second.writer('actor_0') as writer:
    writer.append(with_return('cart', 1, 2.0))  # The best of cart, in the second store.
    writer.append(with_return('cart', 2, 0.5))
  dirs = [tmp_path / 'missing', tmp_path / 'a', tmp_path / 'b']  # A run's store not made yet.
  best = best_demonstrations(dirs, ['cart', 'walker', 'other'])
  episode, episode_return = best['cart']
  assert episode_return == pytest.approx(12.0)
  np.testing.assert_array_equal(episode.observations, _episode('cart', 1, 6).observations)
  assert best['walker'][1] == pytest.approx(54.0)
  assert 'other' not in best
