"""StoreSampler against the real acme n-step adder writing into a real Reverb server."""

import dataclasses
import logging
import re
import time

import dm_env
import numpy as np
import pytest
import reverb
from acme import specs, types
from acme.adders.reverb import DEFAULT_PRIORITY_TABLE, NStepTransitionAdder

from agents.mpo.labels import make_labeller
from launch.store import episodes as episodes_module
from launch.store.episodes import Episode, EpisodeStore
from launch.store.sampling import StoreSampler, transition_starts

_OBS_DIM = 3
_ACT_DIM = 2
_SPEC = specs.EnvironmentSpec(
  observations=specs.Array((_OBS_DIM,), np.float32),
  actions=specs.BoundedArray((_ACT_DIM,), np.float32, -1.0, 1.0),
  rewards=specs.Array((), np.float32),
  discounts=specs.BoundedArray((), np.float32, 0.0, 1.0),
)


def _episode(
  rng: np.random.Generator, index: int, length: int, ending: str, dtype=np.float32
) -> Episode:
  """An episode whose observations name it: [index, t, noise]."""
  obs = np.stack(
    [np.full(length + 1, index), np.arange(length + 1), rng.normal(size=length + 1)], axis=1
  ).astype(np.float32)
  discounts = rng.choice([1.0, 1.0, 0.9, 0.5], size=length).astype(dtype)
  discounts[-1] = 0.0 if ending == 'terminal' else 1.0
  return Episode(
    observations=obs,
    actions=rng.normal(size=(length, _ACT_DIM)).astype(np.float32),
    rewards=rng.normal(size=length).astype(dtype),
    discounts=discounts,
    metadata={'index': index},
  )


def _adder_transitions(episodes, n_step, discount, dtype):
  """Every item the real NStepTransitionAdder puts into a real Reverb table."""
  spec = specs.EnvironmentSpec(
    observations=specs.Array((_OBS_DIM,), np.float32),
    actions=specs.Array((_ACT_DIM,), np.float32),
    rewards=specs.Array((), dtype),
    discounts=specs.BoundedArray((), dtype, 0.0, 1.0),
  )
  table = reverb.Table.queue(
    DEFAULT_PRIORITY_TABLE, max_size=10_000, signature=NStepTransitionAdder.signature(spec)
  )
  server = reverb.Server(tables=[table], port=None)
  try:
    return _feed_and_drain(f'localhost:{server.port}', episodes, n_step, discount)
  finally:
    server.stop()


def _feed_and_drain(address, episodes, n_step, discount):
  # Its own function so the client and adder are gone before the server
  # stops (a connected client makes stop() wait out a 5 s grace period).
  client = reverb.Client(address)
  adder = NStepTransitionAdder(client, n_step=n_step, discount=discount)
  for ep in episodes:
    adder.add_first(dm_env.restart(ep.observations[0]))
    for t in range(ep.length):
      step_type = dm_env.StepType.LAST if t == ep.length - 1 else dm_env.StepType.MID
      adder.add(
        ep.actions[t],
        dm_env.TimeStep(step_type, ep.rewards[t], ep.discounts[t], ep.observations[t + 1]),
      )
  adder.reset()
  count = client.server_info()[DEFAULT_PRIORITY_TABLE].current_size
  items = [
    s.data
    for s in client.sample(
      DEFAULT_PRIORITY_TABLE,
      num_samples=count,
      emit_timesteps=False,
      unpack_as_table_signature=True,
    )
  ]
  return items


def _keyed(observation, next_observation):
  """(episode, start step, end step): unique per transition given _episode's observations."""
  return (int(observation[0]), int(observation[1]), int(next_observation[1]))


def _fill(tmp_path, episodes, name='actor_0'):
  store = EpisodeStore(tmp_path / 'store')
  with store.writer(name) as writer:
    for ep in episodes:
      writer.append(ep)
  return store


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('n_step', [1, 2, 3, 5])
def test_transitions_equal_those_of_acme_nstep_adder(tmp_path, n_step, dtype):
  rng = np.random.default_rng(n_step)
  # Shorter than, equal to and longer than n; terminal and time-limit endings.
  plan = [
    (1, 'terminal'),
    (2, 'truncation'),
    (3, 'terminal'),
    (5, 'terminal'),
    (7, 'truncation'),
    (8, 'terminal'),
  ]
  episodes = [_episode(rng, i, length, ending, dtype) for i, (length, ending) in enumerate(plan)]
  discount = 0.97
  items = _adder_transitions(episodes, n_step, discount, dtype)
  sampler = StoreSampler(_fill(tmp_path, episodes), n_step=n_step, discount=discount, seed=0)
  assert sampler.refresh() == len(episodes)
  ours = sampler.all_transitions()

  assert sampler.num_transitions == len(items)
  expected = sum(length - 1 + min(n_step, length) for length, _ in plan)
  assert len(items) == expected
  theirs = {}
  for item in items:
    key = _keyed(item.observation, item.next_observation)
    assert key not in theirs
    theirs[key] = item
  mine = {}
  for i in range(sampler.num_transitions):
    key = _keyed(ours.observation[i], ours.next_observation[i])
    assert key not in mine
    mine[key] = i
  assert set(mine) == set(theirs)
  for key, item in theirs.items():
    i = mine[key]
    np.testing.assert_array_equal(ours.observation[i], item.observation)
    np.testing.assert_array_equal(ours.action[i], item.action)
    np.testing.assert_array_equal(ours.next_observation[i], item.next_observation)
    # The sampler repeats the adder's arithmetic in its order and dtypes, so
    # returns and discounts agree bit for bit, not just to a tolerance.
    np.testing.assert_array_equal(ours.reward[i], item.reward)
    np.testing.assert_array_equal(ours.discount[i], item.discount)
  item = items[0]
  for field in ('observation', 'action', 'reward', 'discount', 'next_observation'):
    assert getattr(ours, field).dtype == np.asarray(getattr(item, field)).dtype, field
  # A terminal step makes every transition that crosses it end with discount 0.
  terminal_ends = [(i, length) for i, (length, ending) in enumerate(plan) if ending == 'terminal']
  for episode, length in terminal_ends:
    for key, i in mine.items():
      if key[0] == episode and key[2] == length:
        assert ours.discount[i] == 0.0


def test_hand_computed_two_step_transitions(tmp_path):
  obs = np.arange(4, dtype=np.float32)[:, None]
  episode = Episode(
    observations=obs,
    actions=np.zeros((3, 1), np.float32),
    rewards=np.array([1.0, 2.0, 3.0], np.float32),
    discounts=np.array([1.0, 1.0, 0.0], np.float32),
  )
  sampler = StoreSampler(_fill(tmp_path, [episode]), n_step=2, discount=0.5)
  sampler.refresh()
  got = sampler.all_transitions()
  pairs = [(int(o), int(n)) for o, n in zip(got.observation[:, 0], got.next_observation[:, 0])]
  # s0 -> s1 and s0 -> s2 (the adder's short start), then s1 -> s3, s2 -> s3.
  assert pairs == [(0, 1), (0, 2), (1, 3), (2, 3)]
  # r0; r0 + g d0 r1; r1 + g d1 r2; r2.
  np.testing.assert_array_equal(got.reward, np.array([1.0, 2.0, 3.5, 3.0], np.float32))
  # d0; g d0 d1; g d1 d2; d2.
  np.testing.assert_array_equal(got.discount, np.array([1.0, 0.5, 0.0, 0.0], np.float32))


def test_transition_starts_counts():
  starts, steps = transition_starts(length=4, n_step=3)
  assert list(zip(starts, steps)) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 2), (3, 1)]
  starts, steps = transition_starts(length=2, n_step=5)
  assert list(zip(starts, steps)) == [(0, 1), (0, 2), (1, 1)]


def test_sampling_is_uniform_seeded_and_drawn_from_all_transitions(tmp_path):
  rng = np.random.default_rng(0)
  episodes = [_episode(rng, i, 4, 'terminal') for i in range(3)]
  store = _fill(tmp_path, episodes)
  sampler = StoreSampler(store, n_step=2, discount=0.9, seed=123)
  sampler.refresh()
  everything = sampler.all_transitions()
  keys = {
    _keyed(o, n): i
    for i, (o, n) in enumerate(zip(everything.observation, everything.next_observation))
  }
  batch = sampler.sample(30_000)
  assert batch.observation.shape == (30_000, _OBS_DIM)
  assert batch.action.shape == (30_000, _ACT_DIM)
  assert batch.reward.shape == batch.discount.shape == (30_000,)
  drawn = np.array([keys[_keyed(o, n)] for o, n in zip(batch.observation, batch.next_observation)])
  np.testing.assert_array_equal(batch.reward, everything.reward[drawn])
  np.testing.assert_array_equal(batch.discount, everything.discount[drawn])
  counts = np.bincount(drawn, minlength=len(keys))
  expected = 30_000 / len(keys)
  assert counts.min() > 0.85 * expected and counts.max() < 1.15 * expected

  first = StoreSampler(store, n_step=2, discount=0.9, seed=5)
  second = StoreSampler(store, n_step=2, discount=0.9, seed=5)
  first.refresh()
  second.refresh()
  np.testing.assert_array_equal(first.sample(64).observation, second.sample(64).observation)
  other = StoreSampler(store, n_step=2, discount=0.9, seed=np.random.default_rng(7))
  other.refresh()
  assert not np.array_equal(other.sample(64).observation, first.sample(64).observation)


def test_refresh_takes_in_new_episodes_from_several_stores(tmp_path):
  rng = np.random.default_rng(1)
  earlier = EpisodeStore(tmp_path / 'earlier')
  with earlier.writer('robot') as writer:
    writer.append(_episode(rng, 0, 3, 'terminal'))
  current = EpisodeStore(tmp_path / 'current')
  sampler = StoreSampler([earlier, current], n_step=1, discount=0.99, seed=0)
  assert sampler.refresh() == 1
  assert (sampler.num_episodes, sampler.num_transitions) == (1, 3)
  assert sampler.refresh() == 0
  with current.writer('actor_0') as writer:
    writer.append(_episode(rng, 1, 4, 'truncation'))
    writer.append(_episode(rng, 2, 2, 'terminal'))
  assert sampler.refresh() == 2
  assert (sampler.num_episodes, sampler.num_transitions) == (3, 9)
  episodes_seen = set(sampler.all_transitions().observation[:, 0].astype(int))
  assert episodes_seen == {0, 1, 2}


def test_mismatched_episode_is_refused(tmp_path, caplog):
  rng = np.random.default_rng(2)
  good = _episode(rng, 0, 3, 'terminal')
  odd = Episode(
    observations=np.zeros((3, 5), np.float32),
    actions=np.zeros((2, _ACT_DIM), np.float32),
    rewards=np.zeros(2, np.float32),
    discounts=np.ones(2, np.float32),
  )
  store = _fill(tmp_path, [good, odd])
  odd_id = store.index()[1].episode_id
  sampler = StoreSampler(store, n_step=1, discount=0.99)
  # Refused, never fatal: left out with the reason, and only the good one sampled.
  with caplog.at_level(logging.WARNING, logger='collect_infer.store'):
    assert sampler.refresh() == 1
  assert re.search(rf'{odd_id}: does not match the others: observation shape', caplog.text)
  assert (sampler.num_episodes, sampler.num_transitions) == (1, 3)
  assert sampler.sample(64).observation.shape == (64, _OBS_DIM)
  assert store.quarantined() == {}  # It may suit another program: left in place.
  assert sampler.refresh() == 0  # And not looked at again.

  # In the program's own store an episode unlike the program's spec is quarantined.
  own = StoreSampler(store, n_step=1, discount=0.99, spec=_SPEC, own_stores=1)
  assert own.refresh() == 1
  assert list(EpisodeStore(store.directory).quarantined()) == [odd_id]
  assert 'observation shape (5,) (expected (3,))' in store.quarantined()[odd_id]


def test_episodes_of_expert_labels_are_only_for_a_learner_that_imitates(tmp_path, caplog):
  rng = np.random.default_rng(4)
  executed = _episode(rng, 0, 3, 'terminal')
  labelled = _episode(rng, 1, 4, 'terminal')
  labelled.metadata['action_label'] = 'expert'  # make_dataset --expert_labels
  store = _fill(tmp_path, [executed, labelled])
  labelled_id = store.index()[1].episode_id
  # A learner of values: its rewards follow other actions than the stored ones, so it is
  # left out (not quarantined: it is good data for imitation), saying why.
  values = StoreSampler(store, n_step=1, discount=0.99, spec=_SPEC, own_stores=1)
  with caplog.at_level(logging.WARNING, logger='collect_infer.store'):
    assert values.refresh() == 1
  assert f"{labelled_id}: metadata 'action_label' is 'expert'" in caplog.text
  assert (values.num_episodes, values.num_transitions) == (1, 3)
  assert store.quarantined() == {}
  # Behaviour cloning takes both.
  imitation = StoreSampler(store, n_step=1, discount=0.99, spec=_SPEC, expert_labels_ok=True)
  assert imitation.refresh() == 2 and imitation.num_transitions == 3 + 4


def test_empty_store_and_iterator(tmp_path):
  store = EpisodeStore(tmp_path / 'store')
  sampler = StoreSampler(store, n_step=3, discount=0.99, seed=0)
  assert sampler.refresh() == 0
  with pytest.raises(ValueError, match='no stored transitions'):
    sampler.sample(4)
  rng = np.random.default_rng(3)
  with store.writer('actor_0') as writer:
    writer.append(_episode(rng, 0, 6, 'terminal'))
  batches = sampler.iterate(batch_size=16, refresh_every_s=0.0)
  first = next(batches)
  assert first.observation.shape == (16, _OBS_DIM)
  with store.writer('actor_1') as writer:
    writer.append(_episode(rng, 1, 6, 'terminal'))
  next(batches)  # Refreshes before drawing.
  assert sampler.num_episodes == 2


def test_sampling_stays_fast_with_many_episodes(tmp_path):
  rng = np.random.default_rng(4)
  store = _fill(tmp_path, [_episode(rng, i, 500, 'truncation') for i in range(100)])
  sampler = StoreSampler(store, n_step=5, discount=0.99, seed=0)
  assert sampler.refresh() == 100
  assert sampler.num_transitions == 100 * (500 - 1 + 5)
  start = time.perf_counter()
  for _ in range(50):
    sampler.sample(256)
  per_batch = (time.perf_counter() - start) / 50
  # Vectorised gathers: well under a millisecond each on one core; the bound
  # leaves room for a loaded machine but not for a Python loop per sample.
  assert per_batch < 0.01, per_batch


def _append_unchecked(directory, name, episode):
  """Stores `episode` as code without today's checks would have: the record
  goes on the end of the writer's segment and the writer's recovery indexes it."""
  arrays = {f: getattr(episode, f) for f in ('observations', 'actions', 'rewards', 'discounts')}
  store = EpisodeStore(directory)
  seq = sum(1 for i in store.index() if i.writer == name) + len(store.quarantined())
  header = {
    'id': f'{name}-{seq:08d}',
    'writer': name,
    'seq': seq,
    'time': time.time(),
    'length': episode.length,
    'return': 0.0,
    'metadata': episode.metadata,
  }
  segment = sorted(directory.glob(f'{name}.*.seg'))[-1]
  with open(segment, 'ab') as f:
    f.write(episodes_module._encode_record(header, arrays))  # pylint: disable=protected-access
  store.writer(name).close()  # Indexes the whole record it finds.
  return header['id']


def test_poison_episodes_are_quarantined_never_fatal_and_never_sampled(tmp_path, caplog):
  rng = np.random.default_rng(5)
  good = [_episode(rng, i, 4, 'terminal') for i in range(3)]
  store = _fill(tmp_path, good[:2])
  directory = store.directory
  with store.writer('actor_0') as writer:
    yes = writer.append(dataclasses.replace(good[0], metadata={'success': 'yes'}))
    far = _episode(rng, 7, 4, 'terminal')
    far.discounts[1] = 1.5
    far_id = writer.append(far)
  nan = _episode(rng, 8, 4, 'terminal')
  nan.observations[2, 1] = np.nan
  nan_id = _append_unchecked(directory, 'actor_0', nan)
  with EpisodeStore(directory).writer('actor_0') as writer:
    writer.append(good[2])
  assert len(EpisodeStore(directory)) == 6

  for restart in range(2):  # The learner's start-up, and again after a restart.
    caplog.clear()
    sampler = StoreSampler(
      EpisodeStore(directory), n_step=2, discount=0.9, seed=0, labeller=make_labeller(0.0)
    )
    with caplog.at_level(logging.WARNING, logger='collect_infer.store'):
      assert sampler.refresh() == 3
    assert sampler.num_episodes == 3
    assert set(sampler.all_transitions().observation[:, 0].astype(int)) == {0, 1, 2}
    quarantined = EpisodeStore(directory).quarantined()
    assert set(quarantined) == {yes, far_id, nan_id}
    assert "metadata 'success' must be true / false" in quarantined[yes]
    assert 'discounts: 1.5 at step 1 is outside [0, 1]' in quarantined[far_id]
    assert 'observations: non-finite value at step 2' in quarantined[nan_id]
    if restart == 0:
      for episode_id in (yes, far_id, nan_id):
        assert f'episode {episode_id} quarantined' in caplog.text
    else:
      assert 'quarantined' not in caplog.text  # Listed once; not read again.
  log_lines = (directory / '_quarantine.log').read_bytes().splitlines()
  assert len(log_lines) == 3


def test_an_episode_quarantined_elsewhere_is_dropped_at_the_next_refresh(tmp_path):
  rng = np.random.default_rng(6)
  store = _fill(tmp_path, [_episode(rng, i, 5, 'terminal') for i in range(3)])
  sampler = StoreSampler(store, n_step=3, discount=0.9, seed=0)
  assert sampler.refresh() == 3
  victim = store.index()[1].episode_id
  EpisodeStore(store.directory).quarantine(victim, 'operator: bad camera')  # Another process.
  assert sampler.refresh() == 0
  assert sampler.num_episodes == 2
  seen = set(sampler.sample(2000).observation[:, 0].astype(int))
  assert seen == {0, 2}
  every = sampler.all_transitions()
  assert len(every.observation) == 2 * len(transition_starts(5, 3)[0])


def test_episodes_of_another_dtype_are_cast_to_the_programs(tmp_path):
  rng = np.random.default_rng(7)
  wide = _episode(rng, 0, 5, 'terminal')
  wide.observations = wide.observations.astype(np.float64)
  store = _fill(tmp_path, [wide, _episode(rng, 1, 5, 'terminal')])
  sampler = StoreSampler(store, n_step=2, discount=0.9, spec=_SPEC, own_stores=1)
  assert sampler.refresh() == 2
  assert sampler.sample(8).observation.dtype == np.float32
  assert store.quarantined() == {}


def _keyed_transitions(sampler):
  every = sampler.all_transitions()
  return {
    _keyed(o, n): (r, d)
    for o, n, r, d in zip(every.observation, every.next_observation, every.reward, every.discount)
  }


def test_memory_cap_holds_a_uniform_random_subset(tmp_path):
  rng = np.random.default_rng(8)
  episodes = [_episode(rng, i, 20, 'truncation') for i in range(12)]
  store = _fill(tmp_path, episodes[:6])
  uncapped = StoreSampler(store, n_step=3, discount=0.9, memory_cap_bytes=None)
  uncapped.refresh()
  per_episode = uncapped.held_bytes / 6
  cap = int(4.5 * per_episode)  # Room for four of the twelve.

  held_counts = np.zeros(12)
  samplers = [
    StoreSampler(store, n_step=3, discount=0.9, seed=s, memory_cap_bytes=cap) for s in range(150)
  ]
  for sampler in samplers:
    sampler.refresh()
    assert sampler.held_bytes <= cap
  with store.writer('actor_0') as writer:  # Six more arrive later.
    for episode in episodes[6:]:
      writer.append(episode)
  uncapped.refresh()
  everything = _keyed_transitions(uncapped)
  for sampler in samplers:
    sampler.refresh()
    assert sampler.held_bytes <= cap
    assert 3 <= sampler.num_episodes <= 4
    assert sampler.num_episodes + sampler.num_left_out == 12
    held = set(sampler.all_transitions().observation[:, 0].astype(int))
    assert len(held) == sampler.num_episodes
    held_counts[list(held)] += 1
    # What is held is bit for bit what the uncapped sampler gives for those episodes.
    for key, (reward, discount) in _keyed_transitions(sampler).items():
      assert everything[key][0] == reward and everything[key][1] == discount
  # Every episode, early or late, is held about equally often (about 1/3 of the time).
  frequency = held_counts / len(samplers)
  assert frequency.min() > 0.15 and frequency.max() < 0.5, frequency
  assert abs(frequency[:6].mean() - frequency[6:].mean()) < 0.08, frequency

  # Batches are uniform over the held transitions.
  sampler = samplers[0]
  held = _keyed_transitions(sampler)
  index = {key: i for i, key in enumerate(held)}
  batch = sampler.sample(20_000)
  drawn = [index[_keyed(o, n)] for o, n in zip(batch.observation, batch.next_observation)]
  counts = np.bincount(drawn, minlength=len(held))
  expected = 20_000 / len(held)
  assert counts.min() > 0.75 * expected and counts.max() < 1.25 * expected


def test_balanced_tasks_draw_each_task_equally_whatever_it_holds(tmp_path):
  """Task a holds 9x task b's transitions: balanced, each is half of the batch; not
  balanced, 9:1. Episodes name themselves in their first observation value."""
  rng = np.random.default_rng(5)
  store = EpisodeStore(tmp_path / 'store')
  tasks = {}
  with store.writer('w') as writer:
    for index, (task, length) in enumerate([('a', 90), ('a', 90), ('a', 90), ('b', 30)]):
      episode = _episode(rng, index, length, 'truncated')
      episode.metadata['task'] = task
      tasks[index] = task
      writer.append(episode)
  for balance, share_of_b in ((True, 0.5), (False, 30 / 300)):
    sampler = StoreSampler(store, n_step=1, discount=0.99, seed=0, balance_tasks=balance)
    sampler.refresh()
    assert sampler.task_transitions() == {'a': 270, 'b': 30}
    drawn = sampler.sample(20_000).observation[:, 0].astype(int)
    from_b = np.mean([tasks[i] == 'b' for i in drawn])
    assert abs(from_b - share_of_b) < 0.02, (balance, from_b)
    # Within a task, every transition is as likely: all 30 of b's are drawn.
    b_steps = sampler.sample(20_000).observation
    assert len({t for i, t in b_steps[:, :2].astype(int) if tasks[i] == 'b'}) == 30
  # Episodes dropped later (quarantined) leave the grouping: only a's are drawn then.
  b_id = [info.episode_id for info in store.index()][3]
  store.quarantine(b_id, 'test')
  sampler.refresh()
  assert sampler.task_transitions() == {'a': 270}
  balanced = StoreSampler(store, n_step=1, discount=0.99, seed=0, balance_tasks=True)
  balanced.refresh()
  balanced.sample(8)  # groups by task
  store.quarantine([info.episode_id for info in store.index()][0], 'test')
  balanced.refresh()
  assert set(balanced.sample(2000).observation[:, 0].astype(int)) == {1, 2}


def test_episodes_of_several_bodies_are_placed_in_the_task_layout(tmp_path, caplog):
  """Two bodies' stored episodes (as their actors recorded them) come out as one layout's
  transitions; another run's task is left out, not quarantined."""
  from agents.common.bodies import Body
  from agents.common.task_layout import TaskLayout

  def body(obs: int, act: int) -> Body:
    return Body(_SPEC._replace(
      observations=specs.Array((obs,), np.float32),
      actions=specs.BoundedArray((act,), np.float32, -1.0, 1.0),
    ))  # fmt: skip

  layout = TaskLayout({'a:x': body(3, 2), 'b:y': body(1, 1)})
  rng = np.random.default_rng(0)
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('w') as writer:
    a = _episode(rng, 1, 20, 'terminal')
    a.metadata['task'] = 'a:x'
    b = Episode(
      observations=np.full((11, 1), 7.0, np.float32),
      actions=np.full((10, 1), 0.5, np.float32),
      rewards=np.ones(10, np.float32),
      discounts=np.ones(10, np.float32),
      metadata={'task': 'b:y'},
    )
    other = dataclasses.replace(b, metadata={'task': 'c:z'})
    for episode in (a, b, other):
      writer.append(episode)
  sampler = StoreSampler(
    store, n_step=1, discount=0.99, seed=0, spec=layout.spec, own_stores=1,
    place=layout.place_episode,
  )  # fmt: skip
  with caplog.at_level(logging.WARNING):
    sampler.refresh()
  assert sampler.task_transitions() == {'a:x': 20, 'b:y': 10}
  assert "task 'c:z' is not one of the run's (a:x, b:y)" in caplog.text
  assert store.quarantined() == {}
  batch = sampler.sample(500)
  assert batch.observation.shape == (500, 3 + 1 + 2) and batch.action.shape == (500, 3)
  from_b = batch.observation[:, -1] == 1.0
  assert 0 < from_b.sum() < 500
  np.testing.assert_array_equal(batch.observation[from_b, :4], [[0, 0, 0, 7.0]] * from_b.sum())
  np.testing.assert_array_equal(batch.action[from_b], [[0, 0, 0.5]] * from_b.sum())
  np.testing.assert_array_equal(batch.observation[~from_b, 3:], [[0, 1, 0]] * (~from_b).sum())
  np.testing.assert_array_equal(batch.action[~from_b, 2], 0.0)


def test_an_empty_store_lends_its_share_to_replay_until_it_holds_episodes(tmp_path):
  """A fresh online run's store is empty; its share comes from the fallback (replay) at
  once, not after a wait, and from the store as soon as an episode is in it."""
  from launch.store.mixing import MixedBatches

  rng = np.random.default_rng(0)
  store = EpisodeStore(tmp_path / 'store')
  sampler = StoreSampler(store, n_step=1, discount=0.99, seed=0)

  def replay_batches(size, value):
    def batch():
      obs = np.full((size, _OBS_DIM), value, np.float32)
      act = np.zeros((size, _ACT_DIM), np.float32)
      return reverb.ReplaySample(
        info=None, data=types.Transition(obs, act, np.zeros(size), np.ones(size), obs)
      )

    while True:
      yield batch()

  made = []

  def fallback():
    made.append(1)
    return replay_batches(4, -2.0)

  mixed = MixedBatches(
    replay_batches(6, -1.0),
    sampler,
    store_batch=4,
    wait_timeout_s=30.0,
    refresh_every_s=60.0,
    store_fallback=fallback,
  )
  started = time.monotonic()
  batch = next(mixed)
  assert time.monotonic() - started < 5.0, 'it waited for the store'
  np.testing.assert_array_equal(batch.observation[:, 0], [-2.0] * 4 + [-1.0] * 6)
  next(mixed)
  assert made == [1]  # made once, on first use
  with store.writer('w') as writer:
    writer.append(_episode(rng, 7, 10, 'terminal'))
  # An empty store is looked at every half second, not at the full refresh period: a short
  # run's first episodes may end only seconds before its last.
  time.sleep(0.6)
  batch = next(mixed)
  np.testing.assert_array_equal(batch.observation[:4, 0], [7.0] * 4)
  assert mixed._store_fallback is None
  # Without a fallback (offline modes: no replay), an empty store ends the iterator.
  empty = StoreSampler(EpisodeStore(tmp_path / 'empty'), n_step=1, discount=0.99, seed=0)
  with pytest.raises(StopIteration):
    next(MixedBatches(None, empty, store_batch=4, wait_timeout_s=0.3))
