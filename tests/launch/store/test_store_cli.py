"""`python -m launch.store`: info, RLDS export and import, on real files."""

import numpy as np

from launch.store.__main__ import main
from launch.store.episodes import EpisodeStore
from tests.fakes import random_episode


def _episodes(n, rng):
  return [random_episode(rng, 5 + i, obs_shape=(3,), metadata={'source': f'actor_{i % 2}'})
          for i in range(n)]


def test_export_then_import_round_trips_and_info_reports(tmp_path, capsys):
  store = EpisodeStore(tmp_path / 'store')
  originals = _episodes(4, np.random.default_rng(0))
  with store.writer('actor') as writer:
    for episode in originals:
      writer.append(episode)
  assert main(['info', str(tmp_path / 'store')]) == 0
  out = capsys.readouterr().out
  assert '4 episodes' in out and 'actor_0: 2 episodes' in out and 'actor_1: 2 episodes' in out

  assert main(['export', str(tmp_path / 'store'), str(tmp_path / 'rlds')]) == 0
  assert main(['import', str(tmp_path / 'rlds'), str(tmp_path / 'copy')]) == 0
  copy = EpisodeStore(tmp_path / 'copy')
  assert len(copy) == 4
  for original, info in zip(originals, copy.index()):
    back = copy.read(info.episode_id)
    for field in ('observations', 'actions', 'rewards', 'discounts'):
      assert getattr(back, field).tobytes() == getattr(original, field).tobytes()
    assert back.metadata['source'] == original.metadata['source']
    assert back.metadata['imported_from'].endswith('rlds')


def test_a_damaged_dataset_is_refused_or_skipped_by_choice(tmp_path, capsys):
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor') as writer:
    for episode in _episodes(3, np.random.default_rng(1)):
      writer.append(episode)
  assert main(['export', str(tmp_path / 'store'), str(tmp_path / 'rlds')]) == 0
  shard = next((tmp_path / 'rlds').glob('*.tfrecord-*'))
  data = shard.read_bytes()
  shard.write_bytes(data[:len(data) - 40])  # The last episode is cut short.
  capsys.readouterr()
  assert main(['import', str(tmp_path / 'rlds'), str(tmp_path / 'refused')]) == 2
  err = capsys.readouterr().err
  assert shard.name in err and 'episode 2' in err, err
  assert not (tmp_path / 'refused').exists() or len(EpisodeStore(tmp_path / 'refused')) == 0
  assert main(['import', str(tmp_path / 'rlds'), str(tmp_path / 'kept'), '--on_error',
               'skip']) == 0
  assert 'skipped 1' in capsys.readouterr().out
  assert len(EpisodeStore(tmp_path / 'kept')) == 2
