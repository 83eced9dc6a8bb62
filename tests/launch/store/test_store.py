"""The durable episode store: real files, real writer processes, real SIGKILLs."""

import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from launch.store.episodes import (
  CorruptRecordError,
  Episode,
  EpisodeStore,
  EpisodeWriter,
  StoreError,
  WriterBusyError,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]


def make_episode(source: str, i: int, obs_dim: int = 6) -> Episode:
  """A deterministic episode; its metadata is enough to rebuild it."""
  rng = np.random.default_rng(zlib.crc32(f'{source}/{i}'.encode()))
  length = 3 + i % 7
  discounts = np.ones(length, np.float32)
  discounts[-1] = 0.0 if i % 2 else 1.0
  return Episode(
    observations=rng.normal(size=(length + 1, obs_dim)).astype(np.float32),
    actions=rng.uniform(-1, 1, size=(length, 2)).astype(np.float32),
    rewards=rng.normal(size=length).astype(np.float32),
    discounts=discounts,
    metadata={'source': source, 'i': i, 'obs_dim': obs_dim},
  )


def assert_same(got: Episode, want: Episode) -> None:
  for field in ('observations', 'actions', 'rewards', 'discounts'):
    a, b = getattr(got, field), getattr(want, field)
    assert a.dtype == b.dtype and a.shape == b.shape, field
    assert a.tobytes() == np.ascontiguousarray(b).tobytes(), field
  assert got.metadata == want.metadata


def assert_all_intact(store: EpisodeStore) -> None:
  """Every visible episode reads back exactly as its metadata says it was written."""
  for info in store.index():
    episode = store.read(info.episode_id)
    assert_same(episode, make_episode(**episode.metadata))
    assert info.length == episode.length
    assert info.episode_return == pytest.approx(episode.episode_return)


_CHILD = """
import sys, time
from launch.store.episodes import EpisodeStore
from tests.launch.store.test_store import make_episode
directory, name, mode, first, count, obs_dim = sys.argv[1:7]
writer = EpisodeStore(directory).writer(name)
print('ready', flush=True)
if mode == 'hold':
  time.sleep(60)
for i in range(int(first), int(first) + int(count)):
  writer.append(make_episode(name, i, int(obs_dim)))
print('done', flush=True)
"""


def start_writer(directory, name, mode='write', first=0, count=10, obs_dim=6):
  """A writer in its own process; returns once it holds its name."""
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  child = subprocess.Popen(
    [
      sys.executable,
      '-c',
      _CHILD,
      str(directory),
      name,
      mode,
      str(first),
      str(count),
      str(obs_dim),
    ],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  line = child.stdout.readline()
  assert line == 'ready\n', child.stderr.read()
  return child


def indexed_end(directory: pathlib.Path, segment: str) -> int:
  store = EpisodeStore(directory, verify=False)
  return max([i.offset + i.size for i in store.index() if i.segment == segment], default=0)


def test_round_trip_is_bit_exact_for_many_dtypes_and_shapes(tmp_path):
  rng = np.random.default_rng(0)
  special = np.array(
    [0.0, -0.0, np.finfo(np.float32).tiny / 2, np.finfo(np.float32).max, -1e-45, 1.5], np.float32
  )
  episodes = [
    Episode(
      observations=rng.integers(0, 256, size=(4, 5, 5, 3), dtype=np.uint8),
      actions=rng.normal(size=(3, 2)),
      rewards=rng.normal(size=3).astype(np.float32),
      discounts=np.array([1.0, 0.99, 0.0]),
    ),
    Episode(
      observations=np.resize(special, (6, 2, 3)),  # Signed zero, subnormals, max.
      actions=rng.integers(-5, 5, size=5).astype(np.int64),
      rewards=rng.normal(size=5).astype(np.float16),
      discounts=np.ones(5, np.float16),
      metadata={'task': 'cartpole:swingup', 'policy_version': [3, 7], 'nested': {'a': None}},
    ),
    Episode(
      observations=np.asfortranarray(rng.normal(size=(3, 4)).astype('>f4')),
      actions=rng.integers(0, 2, size=(2, 3)).astype(bool),
      rewards=np.array([1.0, -2.0], '>f8'),
      discounts=np.array([1.0, 1.0], np.float32),
    ),
    Episode(
      observations=rng.normal(size=(9, 4))[::2, ::-1],  # Non-contiguous view.
      actions=rng.normal(size=(4, 1)).astype(np.complex64),
      rewards=rng.normal(size=4),
      discounts=np.zeros(4),
      metadata={'empty_obs_dims': True},
    ),
    Episode(
      observations=np.zeros((2, 0), np.float32),
      actions=np.zeros((1, 3), np.uint16),
      rewards=np.zeros(1, np.float32),
      discounts=np.ones(1, np.float32),
    ),
  ]
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor_0') as writer:
    ids = [writer.append(ep) for ep in episodes]
  assert len(set(ids)) == len(ids)
  for reader in (store, EpisodeStore(tmp_path / 'store')):
    assert len(reader) == len(episodes)
    assert reader.num_steps == sum(ep.length for ep in episodes)
    assert [info.episode_id for info in reader.index()] == ids
    for ep, got, info in zip(episodes, reader, reader.index()):
      assert_same(got, ep)
      assert info.writer == 'actor_0' and info.length == ep.length
      assert info.episode_return == ep.episode_return
      assert info.metadata == ep.metadata
      assert got.observations.flags.writeable


def test_refresh_counts_new_episodes_and_reads_only_the_new_tail(tmp_path, caplog):
  directory = tmp_path / 'store'
  store = EpisodeStore(directory)
  writer = store.writer('actor_0')
  assert store.refresh() == 0
  first = [writer.append(make_episode('actor_0', i)) for i in range(3)]
  assert store.refresh() == 3
  assert store.refresh() == 0
  # Damage an episode the reader has already taken in: later refreshes must
  # not read it again (they only look at what is new), and so not notice.
  info = store.index()[0]
  with open(directory / info.segment, 'r+b') as f:
    f.seek(info.offset + info.size - 3)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  second = writer.append(make_episode('actor_0', 3))
  with caplog.at_level(logging.WARNING, logger='collect_infer.store'):
    assert store.refresh() == 1
  assert not caplog.records
  assert [i.episode_id for i in store.index()] == first + [second]
  with pytest.raises(CorruptRecordError, match='checksum'):
    store.read(first[0])
  # A fresh reader checks every record and leaves the damaged one out.
  assert [i.episode_id for i in EpisodeStore(directory).index()] == first[1:] + [second]
  writer.close()


def test_two_writer_processes_append_concurrently(tmp_path):
  directory = tmp_path / 'store'
  children = [start_writer(directory, f'actor_{k}', count=30, obs_dim=64) for k in range(2)]
  reader = EpisodeStore(directory)
  checked = 0
  deadline = time.monotonic() + 30
  while any(c.poll() is None for c in children) and time.monotonic() < deadline:
    # Whatever becomes visible while they write is whole.
    reader.refresh()
    for info in reader.index()[checked:]:
      assert_same(reader.read(info.episode_id), make_episode(**info.metadata))
    checked = len(reader)
    time.sleep(0.01)
  assert 0 < checked  # The reader did look while the writers were running.
  for child in children:
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0 and out == 'done\n', err
  reader.refresh()
  assert len(reader) == 60
  assert sorted((i.metadata['source'], i.metadata['i']) for i in reader.index()) == sorted(
    (f'actor_{k}', i) for k in range(2) for i in range(30)
  )
  assert_all_intact(reader)
  assert_all_intact(EpisodeStore(directory))


def test_a_name_has_one_live_writer(tmp_path):
  store = EpisodeStore(tmp_path / 'store')
  writer = store.writer('robot_1')
  with pytest.raises(WriterBusyError, match="'robot_1' is already open"):
    store.writer('robot_1')
  store.writer('robot_2').close()  # Other names are free.
  writer.close()
  store.writer('robot_1').close()  # Released on close.

  child = start_writer(tmp_path / 'store', 'robot_1', mode='hold')
  try:
    with pytest.raises(WriterBusyError, match=f'pid {child.pid}'):
      EpisodeStore(tmp_path / 'store').writer('robot_1')
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  store.writer('robot_1').close()  # The kernel drops a killed holder's lock.


def test_bad_writer_names_are_refused(tmp_path):
  store = EpisodeStore(tmp_path / 'store')
  for name in ('', '../escape', '.hidden', 'a/b', 'x' * 200):
    with pytest.raises(ValueError, match='writer name'):
      store.writer(name)


def test_kill_9_during_appends_loses_only_the_episode_in_flight(tmp_path):
  directory = tmp_path / 'store'
  segment = 'actor_0.000000.seg'
  mid_append_kills = 0
  written = 0
  for attempt in range(5):
    # Large episodes (~2-5 MB), so most of the writer's time is spent in write and fsync.
    child = start_writer(directory, 'actor_0', first=1000 * attempt, count=50, obs_dim=60_000)
    deadline = time.monotonic() + 15
    try:
      while time.monotonic() < deadline:
        end = indexed_end(directory, segment)
        if end > 0 and os.path.getsize(directory / segment) > end:
          break  # Bytes of an unindexed record: an append is in progress.
      else:
        pytest.fail('never saw the writer part-way through an append')
    finally:
      child.send_signal(signal.SIGKILL)
      child.communicate()
    assert child.returncode == -signal.SIGKILL

    size, end = os.path.getsize(directory / segment), indexed_end(directory, segment)
    mid_append_kills += size > end
    store = EpisodeStore(directory)
    before = len(store)
    assert before >= written and before > 0
    assert_all_intact(store)

    # The same name opens again (the lock died with the process), repairs the
    # segment and carries on.
    with EpisodeStore(directory).writer('actor_0') as writer:
      after_recovery = EpisodeStore(directory)
      assert len(after_recovery) in (before, before + 1)  # + a whole, unindexed record.
      assert os.path.getsize(directory / segment) == indexed_end(directory, segment)
      new_id = writer.append(make_episode('actor_0', 1000 * attempt + 999, obs_dim=60_000))
    store.refresh()
    assert new_id in store
    assert_all_intact(store)
    written = len(store)
    if mid_append_kills and attempt >= 1:
      break
  assert mid_append_kills > 0


def _write_three(directory):
  with EpisodeStore(directory).writer('actor_0') as writer:
    ids = [writer.append(make_episode('actor_0', i)) for i in range(3)]
  return ids, EpisodeStore(directory).index()


def test_truncated_segment_tail_is_skipped_and_repaired(tmp_path, caplog):
  directory = tmp_path / 'store'
  ids, infos = _write_three(directory)
  old_reader = EpisodeStore(directory, verify=False)
  assert len(old_reader) == 3
  last = infos[-1]
  os.truncate(directory / last.segment, last.offset + last.size // 2)

  with caplog.at_level(logging.WARNING, logger='collect_infer.store'):
    store = EpisodeStore(directory)
    assert [i.episode_id for i in store.index()] == ids[:2]
  assert 'missing' in caplog.text
  assert_all_intact(store)

  with store.writer('actor_0') as writer:
    assert os.path.getsize(directory / last.segment) == last.offset  # Torn bytes cut off.
    new_id = writer.append(make_episode('actor_0', 3))
  assert new_id not in ids  # Ids are never reused.
  assert store.refresh() == 1
  assert [i.episode_id for i in store.index()] == ids[:2] + [new_id]
  assert_all_intact(store)
  assert [i.episode_id for i in EpisodeStore(directory).index()] == ids[:2] + [new_id]
  # A reader from before the repair sees the rewritten index and takes in the new episode.
  assert old_reader.refresh() == 1
  assert new_id in old_reader


@pytest.mark.parametrize('where', ['last', 'middle'])
def test_flipped_byte_is_detected_and_that_episode_skipped(tmp_path, caplog, where):
  directory = tmp_path / 'store'
  ids, infos = _write_three(directory)
  victim = infos[-1] if where == 'last' else infos[1]
  with open(directory / victim.segment, 'r+b') as f:
    f.seek(victim.offset + victim.size - 7)  # Inside the payload.
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x01]))

  with caplog.at_level(logging.WARNING, logger='collect_infer.store'):
    store = EpisodeStore(directory)
    visible = [i.episode_id for i in store.index()]
  assert visible == [i for i in ids if i != victim.episode_id]
  assert 'damaged' in caplog.text
  assert_all_intact(store)
  unchecked = EpisodeStore(directory, verify=False)
  assert len(unchecked) == 3
  with pytest.raises(CorruptRecordError):
    unchecked.read(victim.episode_id)

  with store.writer('actor_0') as writer:
    new_id = writer.append(make_episode('actor_0', 3))
  store.refresh()
  assert [i.episode_id for i in store.index()] == visible + [new_id]
  assert_all_intact(store)


def test_torn_record_without_index_line_is_cut_off(tmp_path):
  directory = tmp_path / 'store'
  ids, infos = _write_three(directory)
  segment = directory / infos[0].segment
  size = os.path.getsize(segment)
  # What a crash part-way through writing a record leaves: its first bytes.
  with open(segment, 'rb') as f:
    f.seek(infos[2].offset)
    partial = f.read(infos[2].size - 100)
  with open(segment, 'ab') as f:
    f.write(partial)

  store = EpisodeStore(directory)
  assert [i.episode_id for i in store.index()] == ids
  with store.writer('actor_0') as writer:
    assert os.path.getsize(segment) == size
    new_id = writer.append(make_episode('actor_0', 3))
  assert store.refresh() == 1
  assert [i.episode_id for i in store.index()] == ids + [new_id]
  assert_all_intact(store)


@pytest.mark.parametrize('damage', ['torn_last_line', 'lost_last_line', 'bad_middle_line'])
def test_damaged_index_is_rebuilt_from_the_segment(tmp_path, damage):
  directory = tmp_path / 'store'
  ids, _ = _write_three(directory)
  index = directory / 'actor_0.index'
  head, *lines = index.read_bytes().splitlines(keepends=True)
  assert head.startswith(b'#') and len(lines) == 3
  if damage == 'torn_last_line':
    lines[2] = lines[2][: len(lines[2]) // 2]  # A crash part-way through the line.
    lost = ids[2]
  elif damage == 'lost_last_line':
    lines = lines[:2]  # A crash after the record, before its line.
    lost = ids[2]
  else:
    lines[1] = lines[1].replace(b'"length"', b'"lengTh"')
    lost = ids[1]
  index.write_bytes(head + b''.join(lines))

  reader = EpisodeStore(directory)
  assert [i.episode_id for i in reader.index()] == [i for i in ids if i != lost]
  assert_all_intact(reader)
  # The writer finds the whole record the index lacks and indexes it again.
  with reader.writer('actor_0') as writer:
    new_id = writer.append(make_episode('actor_0', 3))
  assert reader.refresh() == 2
  assert sorted(i.episode_id for i in reader.index()) == sorted(ids + [new_id])
  assert_all_intact(reader)
  assert sorted(i.episode_id for i in EpisodeStore(directory).index()) == sorted(ids + [new_id])


def test_reader_notices_a_rewritten_index_even_on_the_same_inode(tmp_path):
  directory = tmp_path / 'store'
  ids, _ = _write_three(directory)
  index = directory / 'actor_0.index'
  head, *lines = index.read_bytes().splitlines(keepends=True)
  inode = index.stat().st_ino
  with open(index, 'r+b') as f:  # In place: the inode stays.
    f.write(head + lines[0] + lines[2])
    f.truncate()
  reader = EpisodeStore(directory)
  assert [i.episode_id for i in reader.index()] == [ids[0], ids[2]]
  # A repaired index written by a recovering writer has a new first line; if
  # the filesystem reused the old inode, that line is all that tells them apart.
  fresh = b'#CIE1 index ' + b'f' * 16 + b'\n'
  assert len(fresh) == len(head) and fresh != head
  with open(index, 'r+b') as f:
    f.write(fresh + b''.join(lines))
  assert index.stat().st_ino == inode
  assert reader.refresh() == 1
  assert sorted(i.episode_id for i in reader.index()) == sorted(ids)
  assert_all_intact(reader)


def test_segments_roll_over_and_a_reopened_writer_continues(tmp_path):
  directory = tmp_path / 'store'
  store = EpisodeStore(directory)
  with store.writer('actor_0', max_segment_bytes=3000) as writer:
    ids = [writer.append(make_episode('actor_0', i)) for i in range(6)]
  segments = sorted(p.name for p in directory.glob('actor_0.*.seg'))
  assert len(segments) > 1
  assert all(os.path.getsize(directory / s) <= 3000 or s == segments[-1] for s in segments)
  with store.writer('actor_0', max_segment_bytes=3000) as writer:
    ids.append(writer.append(make_episode('actor_0', 6)))
  store.refresh()
  assert [i.episode_id for i in store.index()] == ids
  assert len({i.segment for i in store.index()}) == len(list(directory.glob('actor_0.*.seg')))
  assert_all_intact(store)


def _with(episode: Episode, **changes) -> Episode:
  fields = dict(
    observations=episode.observations,
    actions=episode.actions,
    rewards=episode.rewards,
    discounts=episode.discounts,
    metadata=episode.metadata,
  )
  fields.update(changes)
  return Episode(**fields)


def _nan_at(values: np.ndarray, step: int, value=np.nan) -> np.ndarray:
  values = values.copy()
  values[step] = value
  return values


@pytest.mark.parametrize(
  'changes, message',
  [
    (lambda e: dict(observations=e.observations[:-1]), r'observations: expected \d+ \(T \+ 1\)'),
    (
      lambda e: dict(
        actions=e.actions[:0],
        rewards=e.rewards[:0],
        discounts=e.discounts[:0],
        observations=e.observations[:1],
      ),
      'at least one step',
    ),
    (lambda e: dict(rewards=e.rewards[:, None]), r'rewards: expected shape \(\d+,\)'),
    (lambda e: dict(discounts=e.discounts[1:]), r'discounts: expected shape'),
    (lambda e: dict(rewards=e.rewards.astype(np.int32)), 'rewards: expected a floating dtype'),
    (lambda e: dict(discounts=np.float32(1.0)), 'discounts: expected an array'),
    (lambda e: dict(rewards=_nan_at(e.rewards, 2)), 'rewards: non-finite value at step 2'),
    (
      lambda e: dict(discounts=_nan_at(e.discounts, 1, np.inf)),
      'discounts: non-finite value at step 1',
    ),
    (lambda e: dict(actions=_nan_at(e.actions, 1)), 'actions: non-finite value at step 1'),
    (
      lambda e: dict(observations=_nan_at(e.observations, 3, -np.inf)),
      'observations: non-finite value at step 3',
    ),
    (lambda e: dict(actions=np.array([object()] * e.length)), 'actions: dtype object'),
    (lambda e: dict(metadata={'seed': object()}), 'metadata: not JSON'),
    (lambda e: dict(metadata={'x': float('nan')}), 'metadata: not JSON'),
    (lambda e: dict(metadata=['not', 'a', 'dict']), 'metadata: expected a dict'),
  ],
)
def test_bad_episodes_are_refused_and_nothing_is_stored(tmp_path, changes, message):
  directory = tmp_path / 'store'
  store = EpisodeStore(directory)
  good = make_episode('actor_0', 4)
  with store.writer('actor_0') as writer:
    with pytest.raises(ValueError, match=message):
      writer.append(_with(good, **changes(good)))
    assert os.path.getsize(directory / 'actor_0.000000.seg') == 0
    assert store.refresh() == 0
    writer.append(good)  # The writer is still usable.
  assert store.refresh() == 1
  assert_all_intact(store)


def test_a_closed_writer_refuses_appends(tmp_path):
  (tmp_path / 'store').mkdir()
  writer = EpisodeWriter(tmp_path / 'store', 'robot')
  writer.append(make_episode('robot', 0))
  writer.close()
  assert writer.closed
  with pytest.raises(StoreError, match='closed'):
    writer.append(make_episode('robot', 1))
  assert len(EpisodeStore(tmp_path / 'store')) == 1


# ----------------------------------------------------------------------------
# Stale sizes, corruption in the middle of a segment, quarantine and deletion.


def _write(directory, count, name='actor_0'):
  with EpisodeStore(directory).writer(name) as writer:
    ids = [writer.append(make_episode(name, i)) for i in range(count)]
  return ids, EpisodeStore(directory).index()


@pytest.mark.parametrize('how', ['short', 'absent'])
def test_a_record_not_there_yet_is_taken_in_once_it_is(tmp_path, caplog, how):
  # What a reader sees through a lagging NFS attribute cache: the index line is
  # there, the segment looks shorter than it (or not there at all) for a while.
  directory = tmp_path / 'store'
  ids, infos = _write(directory, 3)
  segment = directory / infos[0].segment
  data = segment.read_bytes()
  if how == 'short':
    os.truncate(segment, infos[2].offset + 10)
    first_ids = ids[:2]
  else:
    segment.unlink()
    first_ids = []
  with caplog.at_level(logging.WARNING, logger='collect_infer.store'):
    reader = EpisodeStore(directory)
    assert [i.episode_id for i in reader.index()] == first_ids
  assert 'missing' in caplog.text
  assert reader.refresh() == 0  # Still not there: nothing new, nothing written off.
  assert {i.episode_id for i in reader.missing()} == set(ids) - set(first_ids)

  segment.write_bytes(data)  # The size catches up.
  assert reader.refresh() == 3 - len(first_ids)
  assert [i.episode_id for i in reader.index()] == ids
  assert reader.missing() == []
  assert_all_intact(reader)
  assert reader.refresh() == 0


def test_a_stale_size_does_not_hold_back_later_episodes(tmp_path):
  directory = tmp_path / 'store'
  ids, infos = _write(directory, 2)
  reader = EpisodeStore(directory)
  assert len(reader) == 2
  with EpisodeStore(directory).writer('actor_1') as writer:
    other = writer.append(make_episode('actor_1', 0))
  with EpisodeStore(directory).writer('actor_0') as writer:
    late = writer.append(make_episode('actor_0', 2))
  late_info = next(i for i in EpisodeStore(directory).index() if i.episode_id == late)
  segment = directory / late_info.segment
  data = segment.read_bytes()
  os.truncate(segment, late_info.offset)
  assert reader.refresh() == 1  # actor_1's episode, not held back by actor_0's.
  assert other in reader and late not in reader
  segment.write_bytes(data)
  assert reader.refresh() == 1
  assert late in reader
  assert_all_intact(reader)


def _damage(path, offset, how):
  with open(path, 'r+b') as f:
    if how == 'payload':
      f.seek(offset + 200)
      byte = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte[0] ^ 0xFF]))
    else:  # The record's start: its magic and lengths are gone.
      f.seek(offset)
      f.write(b'\x00' * 24)


@pytest.mark.parametrize('how', ['payload', 'prefix'])
def test_recovery_without_an_index_keeps_the_records_after_a_corrupt_one(tmp_path, caplog, how):
  directory = tmp_path / 'store'
  ids, infos = _write(directory, 5)
  victim = infos[1]
  segment = directory / victim.segment
  size = os.path.getsize(segment)
  (directory / 'actor_0.index').unlink()
  _damage(segment, victim.offset, how)

  with caplog.at_level(logging.WARNING, logger='collect_infer.store'):
    with EpisodeStore(directory).writer('actor_0') as writer:
      assert os.path.getsize(segment) == size  # Nothing cut: the bad bytes stay in place.
      new_id = writer.append(make_episode('actor_0', 5))
  assert 'not a whole record' in caplog.text
  store = EpisodeStore(directory)
  kept = [i for i in ids if i != victim.episode_id]
  assert [i.episode_id for i in store.index()] == kept + [new_id]
  assert_all_intact(store)
  bad = store.skipped_bytes()
  assert [(b['segment'], b['offset'], b['size']) for b in bad] == [
    (victim.segment, victim.offset, victim.size)
  ]
  # Listed once, however often the name is re-opened.
  with store.writer('actor_0'):
    pass
  assert len(EpisodeStore(directory).skipped_bytes()) == 1
  assert [i.episode_id for i in EpisodeStore(directory).index()] == kept + [new_id]


def test_a_corrupt_tail_after_indexed_records_is_still_cut(tmp_path):
  directory = tmp_path / 'store'
  ids, infos = _write(directory, 3)
  segment = directory / infos[0].segment
  with open(segment, 'ab') as f:
    f.write(b'CIE1' + bytes(500))  # Garbage with nothing whole after it: a torn append.
  with EpisodeStore(directory).writer('actor_0'):
    assert os.path.getsize(segment) == infos[2].offset + infos[2].size
  store = EpisodeStore(directory)
  assert [i.episode_id for i in store.index()] == ids
  assert store.skipped_bytes() == []


def test_quarantine_hides_an_episode_from_every_reader_for_good(tmp_path):
  directory = tmp_path / 'store'
  ids, infos = _write(directory, 3)
  other_reader = EpisodeStore(directory)
  assert len(other_reader) == 3
  store = EpisodeStore(directory)
  store.quarantine(ids[1], 'metadata success must be a bool')
  assert [i.episode_id for i in store.index()] == [ids[0], ids[2]]
  assert len(store) == 2 and ids[1] not in store
  assert store.num_steps == infos[0].length + infos[2].length
  assert store.quarantined() == {ids[1]: 'metadata success must be a bool'}
  assert_same(store.read(ids[1]), make_episode('actor_0', 1))  # Kept, to look at.
  other_reader.refresh()
  assert [i.episode_id for i in other_reader.index()] == [ids[0], ids[2]]
  assert len(other_reader) == 2
  # A new process, and a writer re-opening the name, keep it hidden.
  with EpisodeStore(directory).writer('actor_0') as writer:
    new_id = writer.append(make_episode('actor_0', 3))
  fresh = EpisodeStore(directory)
  assert [i.episode_id for i in fresh.index()] == [ids[0], ids[2], new_id]
  assert fresh.quarantined() == {ids[1]: 'metadata success must be a bool'}
  with pytest.raises(KeyError):
    fresh.quarantine('actor_0-99999999', 'no such episode')


def test_delete_zeroes_the_record_and_no_writer_brings_it_back(tmp_path):
  directory = tmp_path / 'store'
  ids, infos = _write(directory, 3)
  victim = infos[1]
  with open(directory / victim.segment, 'rb') as f:
    f.seek(victim.offset)
    assert f.read(victim.size).strip(b'\x00')
  EpisodeStore(directory).delete(ids[1])
  with open(directory / victim.segment, 'rb') as f:
    f.seek(victim.offset)
    assert f.read(victim.size) == bytes(victim.size)
  store = EpisodeStore(directory)
  assert [i.episode_id for i in store.index()] == [ids[0], ids[2]]
  with pytest.raises(KeyError, match='deleted'):
    store.read(ids[1])
  with store.writer('actor_0') as writer:
    new_id = writer.append(make_episode('actor_0', 3))
  assert [i.episode_id for i in EpisodeStore(directory).index()] == [ids[0], ids[2], new_id]
  assert_all_intact(EpisodeStore(directory))


def test_a_torn_quarantine_line_does_not_swallow_the_next(tmp_path):
  directory = tmp_path / 'store'
  ids, _ = _write(directory, 3)
  EpisodeStore(directory).quarantine(ids[0], 'first')
  log_path = directory / '_quarantine.log'
  with open(log_path, 'ab') as f:
    f.write(b'0badc0de {"kind":"epis')  # A crash part-way through an append.
  EpisodeStore(directory).quarantine(ids[2], 'second')
  assert EpisodeStore(directory).quarantined() == {ids[0]: 'first', ids[2]: 'second'}
