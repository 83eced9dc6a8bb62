"""`python -m launch.store check / quarantine / delete`: the real command on a real store."""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from launch.store import episodes as episodes_module
from launch.store.episodes import Episode, EpisodeStore
from launch.store.sampling import StoreSampler

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _run(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run(
    [sys.executable, '-m', 'launch.store', *map(str, args)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )


def _episode(rng, index, obs_dim=3, length=5, **metadata):
  return Episode(
    observations=np.full((length + 1, obs_dim), index, np.float32),
    actions=rng.uniform(-1, 1, size=(length, 2)).astype(np.float32),
    rewards=rng.normal(size=length).astype(np.float32),
    discounts=np.ones(length, np.float32),
    metadata=dict(source='actor', **metadata),
  )


def _append_unchecked(directory, name, seq, episode):
  """A record as code without today's checks would have written it (NaN inside)."""
  arrays = {f: getattr(episode, f) for f in ('observations', 'actions', 'rewards', 'discounts')}
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
  EpisodeStore(directory).writer(name).close()  # Its recovery indexes the record.
  return header['id']


def _bad_store(directory):
  """A store with one of each kind of bad record among good ones; returns their ids."""
  rng = np.random.default_rng(0)
  bad = {}
  with EpisodeStore(directory).writer('actor_0') as writer:
    good = [writer.append(_episode(rng, i)) for i in range(4)]
    bad['success'] = writer.append(_episode(rng, 10, success='yes'))
    far = _episode(rng, 11)
    far.discounts[2] = 1.5
    bad['discount'] = writer.append(far)
    bad['shape'] = writer.append(_episode(rng, 12, obs_dim=4))
    bad['damaged'] = writer.append(_episode(rng, 13))
  nan = _episode(rng, 14)
  nan.observations[3, 0] = np.nan
  bad['nan'] = _append_unchecked(directory, 'actor_0', 8, nan)
  info = EpisodeStore(directory).info(bad['damaged'])
  with open(directory / info.segment, 'r+b') as f:
    f.seek(info.offset + info.size - 5)
    f.write(b'\xff')
  return good, bad


def test_check_reports_every_bad_record_and_quarantine_and_delete_settle_them(tmp_path):
  directory = tmp_path / 'store'
  good, bad = _bad_store(directory)

  result = _run('check', directory)
  assert result.returncode == 1, result.stdout + result.stderr
  lines = result.stdout.splitlines()
  reasons = {
    'success': "metadata 'success' must be true / false",
    'discount': 'discounts: 1.5 at step 2 is outside [0, 1]',
    'shape': 'unlike the others: observation shape (4,) (most have (3,))',
    'damaged': 'record checksum mismatch',
    'nan': 'observations: non-finite value at step 3',
  }
  for kind, episode_id in bad.items():
    line = next((x for x in lines if episode_id in x), '')
    assert line.split()[:2] == ['bad', episode_id], (kind, result.stdout)
    assert 'actor_0.000000.seg' in line and reasons[kind] in line, (kind, line)
  assert not any(g in result.stdout for g in good)
  assert '5 bad record(s)' in result.stdout

  # delete without its confirmation is refused in one line and changes nothing.
  refused = _run('delete', directory, bad['damaged'])
  assert refused.returncode == 2
  assert refused.stderr.strip().count('\n') == 0 and '--yes' in refused.stderr, refused.stderr
  assert _run('check', directory).returncode == 1

  deleted = _run('delete', directory, bad['damaged'], '--yes')
  assert deleted.returncode == 0, deleted.stderr
  for kind in ('success', 'discount', 'shape', 'nan'):
    done = _run('quarantine', directory, bad[kind], '--reason', f'bad {kind}')
    assert done.returncode == 0, done.stderr
    assert f'quarantined {bad[kind]}' in done.stdout
  again = _run('quarantine', directory, bad['nan'], '--reason', 'twice')
  assert again.returncode == 0 and 'already quarantined' in again.stdout

  settled = _run('check', directory)
  assert settled.returncode == 0, settled.stdout + settled.stderr
  assert '0 bad record(s), 5 quarantined or deleted' in settled.stdout
  assert f'quarantined {bad["nan"]}' in ' '.join(settled.stdout.split())
  assert f'deleted {bad["damaged"]}' in ' '.join(settled.stdout.split())

  store = EpisodeStore(directory)
  assert [i.episode_id for i in store.index()] == good
  sampler = StoreSampler(store, n_step=2, discount=0.9, seed=0)
  assert sampler.refresh() == 4
  assert set(sampler.sample(500).observation[:, 0].astype(int)) == {0, 1, 2, 3}


def test_check_reports_bytes_no_index_covers_and_lists_the_skipped_ones(tmp_path):
  directory = tmp_path / 'store'
  rng = np.random.default_rng(1)
  with EpisodeStore(directory).writer('actor_0') as writer:
    ids = [writer.append(_episode(rng, i)) for i in range(3)]
  infos = EpisodeStore(directory).index()
  index = directory / 'actor_0.index'
  head, *lines = index.read_bytes().splitlines(keepends=True)
  index.write_bytes(head + lines[0] + lines[2])  # The middle record's line is lost...
  with open(directory / infos[1].segment, 'r+b') as f:
    f.seek(infos[1].offset + 100)
    f.write(b'\x00' * 8)  # ...and its bytes damaged.
  result = _run('check', directory)
  assert result.returncode == 1
  where = f'{infos[1].segment}:{infos[1].offset}'
  assert any(x.split()[:2] == ['bad', where] for x in result.stdout.splitlines()), result.stdout

  with EpisodeStore(directory).writer('actor_0'):  # Recovery lists the bytes it skips.
    pass
  result = _run('check', directory)
  assert result.returncode == 0, result.stdout
  assert any(x.split()[:2] == ['skipped', where] for x in result.stdout.splitlines())
  assert [i.episode_id for i in EpisodeStore(directory).index()] == [ids[0], ids[2]]


def test_mistakes_are_one_line_errors(tmp_path):
  directory = tmp_path / 'store'
  with EpisodeStore(directory).writer('actor_0') as writer:
    writer.append(_episode(np.random.default_rng(2), 0))
  for args in (
    ('check', tmp_path / 'nowhere'),
    ('quarantine', directory, 'actor_0-00000077', '--reason', 'x'),
    ('delete', directory, 'actor_0-00000077', '--yes'),
  ):
    result = _run(*args)
    assert result.returncode == 2, (args, result.stderr)
    assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1, result.stderr
  assert not (tmp_path / 'nowhere').exists()
  missing_reason = _run('quarantine', directory, 'actor_0-00000000')
  assert missing_reason.returncode == 2 and '--reason' in missing_reason.stderr
  assert len(EpisodeStore(directory)) == 1
