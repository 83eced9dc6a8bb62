"""Tests for launch.store.rlds_export and rlds_import: RLDS on real TFRecord files."""

import json
import os
import pathlib
import zlib
from typing import Callable, List

import numpy as np
import pytest
import tensorflow as tf

from agents.common.errors import ConfigError, UserError
from launch.store.episodes import Episode, EpisodeStore
from launch.store.rlds_export import export_rlds
from launch.store.rlds_format import BadRecordError, EpisodeSpec, RldsError
from launch.store.rlds_import import import_rlds
from tests.fakes import random_episode as _episode

NAME = 'test_episodes'


def _episodes() -> List[Episode]:
  """Five episodes: shard_size=3 puts 0-2 in shard 0 and 3-4 in shard 1."""
  rng = np.random.default_rng(7)
  return [_episode(rng, steps, terminal=(i == 1), metadata={'source': f'actor{i}'})
          for i, steps in enumerate([6, 2, 9, 5, 3])]


def _assert_same(a: Episode, b: Episode) -> None:
  for name in ('observations', 'actions', 'rewards', 'discounts'):
    x, y = getattr(a, name), getattr(b, name)
    assert (x.dtype, x.shape) == (y.dtype, y.shape), name
    assert x.tobytes() == y.tobytes(), f'{name} differ'
  assert a.metadata == b.metadata


def _shards(out: pathlib.Path) -> List[pathlib.Path]:
  return sorted(out.glob(f'{NAME}-train.tfrecord-*'))


def _records(path: pathlib.Path) -> List[bytes]:
  return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def _offsets(path: pathlib.Path) -> List[int]:
  """Byte offset of each record (12-byte header, data, 4-byte footer)."""
  offsets, offset = [], 0
  for record in _records(path):
    offsets.append(offset)
    offset += 16 + len(record)
  return offsets


def _rewrite(path: pathlib.Path, index: int, mutate: Callable[[tf.train.Example], None]):
  """Rewrites a shard with record `index` changed by `mutate` (valid framing)."""
  records = _records(path)
  example = tf.train.Example.FromString(records[index])
  mutate(example)
  records[index] = example.SerializeToString()
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)


def _export(tmp_path, episodes=None, **kwargs) -> pathlib.Path:
  out = tmp_path / 'ds'
  export_rlds(_episodes() if episodes is None else episodes, out,
              dataset_name=NAME, shard_size=3, **kwargs)
  return out


def test_round_trip_is_bit_exact(tmp_path):
  rng = np.random.default_rng(0)
  episodes = [_episode(rng, 8, metadata={'source': 'actor0', 'policy_version': [3, 9]}),
              _episode(rng, 3, terminal=True, metadata={'task': 'cartpole:swingup'}),
              _episode(rng, 0, metadata={}),  # reset, then nothing: one RLDS step
              _episode(rng, 12, terminal=True, metadata={'seed': 4, 'nested': {'a': [1.5]}}),
              _episode(rng, 1)]
  # Values a lossy path would change: -0.0, a subnormal, the largest float32.
  episodes[0].observations[0, :3] = [-0.0, 1e-45, np.finfo(np.float32).max]
  summary = export_rlds(iter(episodes), tmp_path / 'ds', dataset_name=NAME, shard_size=2)
  assert summary.num_episodes == 5 and summary.num_steps == 24
  assert summary.shard_lengths == (2, 2, 1)
  assert summary.spec == EpisodeSpec((4,), np.float32, (2,), np.float32)

  loaded, report = import_rlds(tmp_path / 'ds', on_error='refuse')
  assert report.ok and report.loaded == 5 and report.expected_episodes == 5
  assert len(loaded) == 5
  for original, back in zip(episodes, loaded):
    _assert_same(original, back)
  assert np.signbit(loaded[0].observations[0, 0])


def test_other_dtypes_round_trip_bit_exact(tmp_path):
  rng = np.random.default_rng(1)
  # float64 observations/rewards, discrete int32 actions, uint8 image-like
  # observations, float16 discounts.
  wide = [_episode(rng, n, terminal=(n == 4), obs_dtype=np.float64, action_shape=(),
                   action_dtype=np.int32, reward_dtype=np.float64,
                   discount_dtype=np.float16) for n in (4, 7)]
  wide[0].observations[1, 0] = 0.1  # not representable in float32
  export_rlds(wide, tmp_path / 'wide', dataset_name=NAME)
  images = [_episode(rng, n, obs_shape=(2, 3, 3), obs_dtype=np.uint8,
                     action_shape=(3,), action_dtype=np.int8) for n in (2, 5)]
  images[0].observations[0, 0, 0, 0] = 255
  images[0].actions[0, 0] = -128
  export_rlds(images, tmp_path / 'images', dataset_name=NAME)

  for directory, originals in (('wide', wide), ('images', images)):
    loaded, report = import_rlds(tmp_path / directory, on_error='refuse')
    assert report.ok
    for original, back in zip(originals, loaded):
      _assert_same(original, back)
  assert loaded[0].observations[0, 0, 0, 0] == 255 and loaded[0].actions[0, 0] == -128
  features = json.loads((tmp_path / 'wide' / 'features.json').read_text())
  steps = features['featuresDict']['features']['steps']['sequence']['feature']
  observation = steps['featuresDict']['features']['observation']['tensor']
  assert observation == {'shape': {'dimensions': ['4']}, 'dtype': 'float64',
                         'encoding': 'bytes'}


def test_files_on_disk_and_their_json(tmp_path):
  out = _export(tmp_path)
  shard_names = [f'{NAME}-train.tfrecord-00000-of-00002',
                 f'{NAME}-train.tfrecord-00001-of-00002']
  assert sorted(os.listdir(out)) == sorted(shard_names + ['dataset_info.json',
                                                          'features.json'])

  info = json.loads((out / 'dataset_info.json').read_text())
  assert info['name'] == NAME and info['version'] == '1.0.0'
  assert info['fileFormat'] == 'tfrecord'
  (split,) = info['splits']
  assert split['name'] == 'train' and split['shardLengths'] == ['3', '2']
  assert int(split['numBytes']) == sum((out / n).stat().st_size for n in shard_names)
  template = split['filepathTemplate']
  assert [template.format(DATASET=NAME, SPLIT='train', FILEFORMAT='tfrecord',
                          SHARD_X_OF_Y=f'{i:05d}-of-00002') for i in range(2)] == shard_names

  features = json.loads((out / 'features.json').read_text())
  prefix = 'tensorflow_datasets.core.features.'
  assert features['pythonClassName'] == prefix + 'features_dict.FeaturesDict'
  top = features['featuresDict']['features']
  assert top['steps']['pythonClassName'] == prefix + 'dataset_feature.Dataset'
  assert top['steps']['sequence']['length'] == '-1'
  steps = top['steps']['sequence']['feature']['featuresDict']['features']
  assert set(steps) == {'observation', 'action', 'reward', 'discount', 'is_first',
                        'is_last', 'is_terminal'}
  assert steps['observation']['tensor'] == {
      'shape': {'dimensions': ['4']}, 'dtype': 'float32', 'encoding': 'none'}
  assert steps['action']['tensor']['shape'] == {'dimensions': ['2']}
  assert steps['reward']['tensor'] == {'shape': {}, 'dtype': 'float32', 'encoding': 'none'}
  for flag in ('is_first', 'is_last', 'is_terminal'):
    assert steps[flag]['pythonClassName'] == prefix + 'scalar.Scalar'
    assert steps[flag]['tensor']['dtype'] == 'bool'
  metadata = top['episode_metadata']['featuresDict']['features']['metadata_json']
  assert metadata['pythonClassName'] == prefix + 'text_feature.Text'


def test_records_parse_the_way_tfds_parses_them(tmp_path):
  """Parses with TensorFlow's example parser and a spec built from features.json
  the way TFDS builds one (a Sequence field is a FixedLenSequenceFeature), then
  checks the RLDS step conventions on the raw tensors."""
  episodes = _episodes()
  out = _export(tmp_path, episodes)
  features = json.loads((out / 'features.json').read_text())['featuresDict']['features']
  steps = features['steps']['sequence']['feature']['featuresDict']['features']
  spec = {}
  for name, feature in steps.items():
    tensor = feature['tensor']
    dtype = tf.float32 if tensor['dtype'].startswith('float') else tf.int64
    shape = [int(d) for d in tensor['shape'].get('dimensions', [])]
    spec[f'steps/{name}'] = tf.io.FixedLenSequenceFeature(shape, dtype, allow_missing=True)
  spec['episode_metadata/metadata_json'] = tf.io.FixedLenFeature([], tf.string)

  records = [r for shard in _shards(out) for r in _records(shard)]
  assert len(records) == len(episodes)
  for episode, record in zip(episodes, records):
    parsed = {k: v.numpy() for k, v in tf.io.parse_single_example(record, spec).items()}
    n = episode.length + 1
    np.testing.assert_array_equal(parsed['steps/observation'], episode.observations)
    np.testing.assert_array_equal(parsed['steps/action'][:-1], episode.actions)
    np.testing.assert_array_equal(parsed['steps/action'][-1], np.zeros(2))
    np.testing.assert_array_equal(parsed['steps/reward'], np.append(episode.rewards, 0))
    np.testing.assert_array_equal(parsed['steps/discount'],
                                  np.append(episode.discounts, 0))
    np.testing.assert_array_equal(parsed['steps/is_first'], np.arange(n) == 0)
    np.testing.assert_array_equal(parsed['steps/is_last'], np.arange(n) == n - 1)
    terminal = episode.discounts[-1] == 0
    np.testing.assert_array_equal(parsed['steps/is_terminal'],
                                  (np.arange(n) == n - 1) & terminal)
    assert json.loads(parsed['episode_metadata/metadata_json']) == episode.metadata
  # Episode 1 ends terminal (discount 0), the others at a time limit.
  terminal_flags = [tf.io.parse_single_example(r, spec)['steps/is_terminal'].numpy()[-1]
                    for r in records]
  assert terminal_flags == [0, 1, 0, 0, 0]



# Per-step dtypes for the store a TFDS read-back test writes: float32 goes in
# a float_list, float16/float64 as raw bytes, integers in an int64_list.
TFDS_SPECS = {
    'float32': dict(obs_shape=(4,), action_shape=(2,)),
    'wide_floats_int_action': dict(obs_dtype=np.float64, action_shape=(),
                                   action_dtype=np.int32, reward_dtype=np.float64,
                                   discount_dtype=np.float16),
    'images': dict(obs_shape=(2, 3, 3), obs_dtype=np.uint8, action_shape=(3,),
                   action_dtype=np.int8),
}


@pytest.mark.parametrize('spec', TFDS_SPECS.values(), ids=TFDS_SPECS.keys())
def test_tensorflow_datasets_reads_an_exported_store(tmp_path, spec):
  """TFDS itself (builder_from_directory) reads the export, bit-exact."""
  import tensorflow_datasets as tfds  # Only this test needs it; it is slow to import.

  rng = np.random.default_rng(3)
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor') as writer:
    for i, steps in enumerate([5, 1, 8, 3, 2]):
      episode = _episode(rng, steps, terminal=(i in (1, 3)),
                         metadata={'id': i, 'source': f'actor{i % 2}', 'tags': [i, 'x']},
                         **spec)
      if i == 0 and episode.observations.dtype.kind == 'f':
        # Values a lossy path would change: -0.0, the smallest subnormal, the max.
        finfo = np.finfo(episode.observations.dtype)
        episode.observations[0, :3] = [-0.0, finfo.smallest_subnormal, finfo.max]
      writer.append(episode)
  stored = list(store)
  summary = export_rlds(iter(store), tmp_path / 'rlds', dataset_name=NAME, shard_size=2)
  assert summary.shard_lengths == (2, 2, 1)

  builder = tfds.builder_from_directory(str(tmp_path / 'rlds'))
  assert builder.info.name == NAME and str(builder.info.version) == '1.0.0'
  split = builder.info.splits['train']
  assert split.num_examples == len(stored) and split.num_shards == 3
  # TFDS interleaves shards when reading (order is kept only while a shard
  # fits one interleave block), so episodes are paired through their id.
  read = {}
  for example in tfds.as_numpy(builder.as_dataset(split='train')):
    metadata = json.loads(example['episode_metadata']['metadata_json'])
    assert metadata['id'] not in read
    read[metadata['id']] = (metadata, list(example['steps']))
  assert sorted(read) == list(range(len(stored)))

  for original in stored:
    metadata, steps = read[original.metadata['id']]
    assert metadata == original.metadata
    n = original.length + 1
    assert len(steps) == n
    stacked = {name: np.stack([step[name] for step in steps]) for name in steps[0]}
    assert set(stacked) == {'observation', 'action', 'reward', 'discount', 'is_first',
                            'is_last', 'is_terminal'}

    def same(name, got, want):
      assert (got.dtype, got.shape) == (want.dtype, want.shape), name
      assert got.tobytes() == want.tobytes(), f'{name} differs'

    same('observation', stacked['observation'], original.observations)
    same('action', stacked['action'][:-1], original.actions)
    same('reward', stacked['reward'][:-1], original.rewards)
    same('discount', stacked['discount'][:-1], original.discounts)
    # RLDS's last step holds the final observation; the rest is zero padding.
    assert not stacked['action'][-1].any()
    assert stacked['reward'][-1] == 0 and stacked['discount'][-1] == 0
    position = np.arange(n)
    same('is_first', stacked['is_first'], position == 0)
    same('is_last', stacked['is_last'], position == n - 1)
    same('is_terminal', stacked['is_terminal'],
         (position == n - 1) & (original.discounts[-1] == 0))
  assert [bool(read[i][1][-1]['is_terminal']) for i in range(len(stored))] == [
      False, True, False, True, False]

# --- Damage: each case returns (file index, record, episode, count, reason fragment). ---


def _set_nan_observation(shards):
  _rewrite(shards[0], 1, lambda ex: ex.features.feature[
      'steps/observation'].float_list.value.__setitem__(5, float('nan')))
  return 0, 1, 1, 1, 'steps/observation has NaN or inf at step 1'


def _set_inf_reward(shards):
  _rewrite(shards[1], 0, lambda ex: ex.features.feature[
      'steps/reward'].float_list.value.__setitem__(2, float('inf')))
  return 1, 0, 3, 1, 'steps/reward has NaN or inf at step 2'


def _wrong_action_shape(shards):
  def mutate(example):
    values = example.features.feature['steps/action'].float_list.value
    steps = len(values) // 2
    del values[:]
    values.extend([0.5] * (steps * 3))  # 3 numbers per step, features.json says 2
  _rewrite(shards[0], 2, mutate)
  return 0, 2, 2, 1, 'steps/action holds 30 values; 10 steps of shape [2] need 20'


def _wrong_action_dtype(shards):
  def mutate(example):
    feature = example.features.feature['steps/action']
    count = len(feature.float_list.value)
    feature.int64_list.value.extend([1] * count)  # replaces the float_list
  _rewrite(shards[1], 1, mutate)
  return 1, 1, 4, 1, 'steps/action is stored as int64_list'


def _inconsistent_flags(shards):
  def mutate(example):
    example.features.feature['steps/is_last'].int64_list.value[0] = 1
  _rewrite(shards[0], 0, mutate)
  return 0, 0, 0, 1, 'steps/is_last must be True on step 6 (the last) only'


def _terminal_without_zero_discount(shards):
  def mutate(example):
    example.features.feature['steps/is_terminal'].int64_list.value[-1] = 1
  _rewrite(shards[0], 2, mutate)
  return 0, 2, 2, 1, 'steps/is_terminal is True on the last step'


def _flag_not_bool(shards):
  def mutate(example):
    example.features.feature['steps/is_first'].int64_list.value[0] = 2
  _rewrite(shards[1], 1, mutate)
  return 1, 1, 4, 1, 'steps/is_first holds values outside the bool range'


def _metadata_not_json(shards):
  def mutate(example):
    example.features.feature['episode_metadata/metadata_json'].bytes_list.value[0] = b'{x'
  _rewrite(shards[1], 0, mutate)
  return 1, 0, 3, 1, 'episode_metadata/metadata_json is not valid JSON'


def _truncate_inside_record(shards):
  start = _offsets(shards[0])[1]
  data = shards[0].read_bytes()
  shards[0].write_bytes(data[:start + 40])  # record 1 cut short; record 2 gone
  return 0, 1, 1, 2, 'truncated: the record needs'


def _truncate_last_record(shards):
  data = shards[1].read_bytes()
  shards[1].write_bytes(data[:-3])
  return 1, 1, 4, 1, 'truncated: the record needs'


def _truncate_inside_header(shards):
  start = _offsets(shards[0])[2]
  shards[0].write_bytes(shards[0].read_bytes()[:start + 5])
  return 0, 2, 2, 1, 'truncated: the file ends 5 bytes into a record header'


def _truncate_at_record_boundary(shards):
  start = _offsets(shards[1])[1]
  shards[1].write_bytes(shards[1].read_bytes()[:start])
  return 1, 1, 4, 1, 'missing: the file ends after 1 records, dataset_info.json lists 2'


def _flip_data_byte(shards):
  data = bytearray(shards[0].read_bytes())
  data[_offsets(shards[0])[1] + 12 + 30] ^= 0x10
  shards[0].write_bytes(bytes(data))
  return 0, 1, 1, 1, 'record data corrupted (checksum mismatch)'


def _flip_length_byte(shards):
  data = bytearray(shards[0].read_bytes())
  data[_offsets(shards[0])[1]] ^= 0x01
  shards[0].write_bytes(bytes(data))
  # The length can't be trusted, so nothing after it can be located.
  return 0, 1, 1, 2, 'record header corrupted (checksum mismatch)'


def _delete_shard(shards):
  shards[1].unlink()
  return 1, 0, 3, 2, 'the shard file is missing'


DAMAGE = [_set_nan_observation, _set_inf_reward, _wrong_action_shape, _wrong_action_dtype,
          _inconsistent_flags, _terminal_without_zero_discount, _flag_not_bool,
          _metadata_not_json,
          _truncate_inside_record, _truncate_last_record, _truncate_inside_header,
          _truncate_at_record_boundary, _flip_data_byte, _flip_length_byte, _delete_shard]


@pytest.mark.parametrize('damage', DAMAGE, ids=[d.__name__.strip('_') for d in DAMAGE])
def test_bad_records_are_reported_refused_or_skipped(tmp_path, damage):
  episodes = _episodes()
  out = _export(tmp_path, episodes)
  shards = _shards(out)
  file_index, record, episode, count, reason = damage(shards)
  file_name = shards[file_index].name

  with pytest.raises(BadRecordError) as refused:
    import_rlds(out, on_error='refuse')
  error = refused.value
  assert isinstance(error, UserError)
  assert (error.file, error.episode) == (file_name, episode)
  assert reason in error.reason
  message = str(error)
  assert file_name in message and reason in message and '\n' not in message
  assert (f'episode {episode}' in message) or (f'episodes {episode}-' in message)

  loaded, report = import_rlds(out, on_error='skip')
  (bad,) = report.bad
  assert (bad.file, bad.record, bad.episode, bad.count) == (
      file_name, record, episode, count)
  assert reason in bad.reason
  assert file_name in report.summary() and reason in report.summary()
  skipped = set(range(episode, episode + count))
  kept = [e for i, e in enumerate(episodes) if i not in skipped]
  assert report.loaded == len(loaded) == len(kept) == 5 - count
  assert report.skipped == count
  for original, back in zip(kept, loaded):
    _assert_same(original, back)


def test_damage_in_several_places_is_all_reported(tmp_path):
  out = _export(tmp_path)
  shards = _shards(out)
  _set_nan_observation(shards)
  _truncate_last_record(shards)
  loaded, report = import_rlds(out)  # 'skip' is the default
  assert [(b.file, b.episode) for b in report.bad] == [(shards[0].name, 1),
                                                       (shards[1].name, 4)]
  assert len(loaded) == 3


def test_reads_zlib_encoded_tensors(tmp_path):
  """TFDS's 'zlib' encoding (never written here) is read, e.g. from other tools."""
  rng = np.random.default_rng(5)
  episodes = [_episode(rng, n, obs_dtype=np.float64) for n in (3, 6)]
  out = tmp_path / 'ds'
  export_rlds(episodes, out, dataset_name=NAME)
  features = json.loads((out / 'features.json').read_text())
  steps = features['featuresDict']['features']['steps']['sequence']['feature']
  steps['featuresDict']['features']['observation']['tensor']['encoding'] = 'zlib'
  (out / 'features.json').write_text(json.dumps(features))
  (shard,) = _shards(out)
  for index in range(2):
    def compress(example):
      values = example.features.feature['steps/observation'].bytes_list.value
      values[:] = [zlib.compress(v) for v in values]
    _rewrite(shard, index, compress)
  loaded, report = import_rlds(out, on_error='refuse')
  assert report.ok
  for original, back in zip(episodes, loaded):
    _assert_same(original, back)


def test_expected_spec(tmp_path):
  out = _export(tmp_path)
  spec = EpisodeSpec([4], 'float32', [2], 'float32')
  loaded, report = import_rlds(out, expected=spec)
  assert report.ok and len(loaded) == 5 and report.spec == spec

  with pytest.raises(RldsError, match=r'holds observation float32\[4\].*expected '
                                      r'observation float32\[5\]'):
    import_rlds(out, expected=EpisodeSpec((5,), np.float32, (2,), np.float32))

  # Without features.json the expected spec says how to read the records.
  (out / 'features.json').unlink()
  with pytest.raises(RldsError, match='features.json is missing'):
    import_rlds(out)
  loaded, report = import_rlds(out, expected=spec)
  assert report.ok and len(loaded) == 5
  _, report = import_rlds(out, expected=EpisodeSpec((4,), np.float32, (3,), np.float32))
  assert len(report.bad) == 5
  assert all('steps/action holds' in b.reason for b in report.bad)


def test_unusable_dataset_directories(tmp_path):
  with pytest.raises(RldsError, match='is not a directory'):
    import_rlds(tmp_path / 'nothing')
  out = _export(tmp_path)
  with pytest.raises(ConfigError, match='on_error'):
    import_rlds(out, on_error='ignore')
  info = (out / 'dataset_info.json').read_text()
  (out / 'dataset_info.json').write_text(info[:20])
  with pytest.raises(RldsError, match='dataset_info.json: unreadable or not valid JSON'):
    import_rlds(out)
  (out / 'dataset_info.json').unlink()
  with pytest.raises(RldsError, match='dataset_info.json is missing'):
    import_rlds(out)
  (out / 'dataset_info.json').write_text(info)
  features = json.loads((out / 'features.json').read_text())
  steps = features['featuresDict']['features']['steps']['sequence']['feature']
  steps['featuresDict']['features']['observation'] = {
      'pythonClassName': 'tensorflow_datasets.core.features.features_dict.FeaturesDict',
      'featuresDict': {'features': {}}}
  (out / 'features.json').write_text(json.dumps(features))
  with pytest.raises(RldsError, match='steps/observation is a .*FeaturesDict'):
    import_rlds(out)


def _nan_episode() -> Episode:
  episode = _episode(np.random.default_rng(3), 4)
  episode.rewards[2] = np.nan
  return episode


@pytest.mark.parametrize('make_episodes, message', [
    (lambda: [], 'no episodes to export'),
    (lambda: _episodes()[:2] + [_episode(np.random.default_rng(2), 3, obs_shape=(5,))],
     r'episode 2 of the export has observation float32\[5\]'),
    (lambda: _episodes()[:4] + [_nan_episode()], 'episode 4 of the export: rewards contain NaN'),
    (lambda: [_episode(np.random.default_rng(2), 3, obs_dtype=np.uint64)],
     'uint64 does not fit'),
    (lambda: [_episode(np.random.default_rng(2), 3, metadata={'x': object()})],
     'metadata is not JSON-serialisable'),
    (lambda: [Episode(np.zeros((3, 2), np.float32), np.zeros((3, 1), np.float32),
                      np.zeros(3, np.float32), np.zeros(3, np.float32))],
     r'observations have shape \(3, 2\), expected \[T\+1=4'),
])
def test_export_refuses_what_it_cannot_store_faithfully(tmp_path, make_episodes, message):
  with pytest.raises(RldsError, match=message):
    export_rlds(make_episodes(), tmp_path / 'ds', dataset_name=NAME, shard_size=2)
  # Nothing is left behind, not even shards written before the bad episode.
  assert not (tmp_path / 'ds').exists()


def test_export_refuses_a_used_directory_and_bad_arguments(tmp_path):
  out = _export(tmp_path)
  before = sorted(os.listdir(out))
  with pytest.raises(RldsError, match='not an empty directory'):
    export_rlds(_episodes(), out, dataset_name=NAME)
  assert sorted(os.listdir(out)) == before
  with pytest.raises(ConfigError, match='snake_case'):
    export_rlds(_episodes(), tmp_path / 'other', dataset_name='My-Dataset')
  with pytest.raises(ConfigError, match='shard_size'):
    export_rlds(_episodes(), tmp_path / 'other', shard_size=0)
