"""A camera run's state features beside its images, through the store, its sampler, the
learner's mixed batches and RLDS (TFDS reads them): nothing of them is lost or reordered."""

import json

import numpy as np
import pytest
from acme import specs

from launch.store.episodes import Episode, EpisodeStore, validate_episode
from launch.store.mixing import MixedBatches
from launch.store.rlds_export import export_rlds
from launch.store.rlds_format import EpisodeSpec, RldsError
from launch.store.rlds_import import episode_sha256, import_rlds
from launch.store.sampling import StoreSampler
from tests.fakes import random_episode

IMAGE = (4, 4, 6)
FEATURES = 3


def _episode(rng, steps: int, **kwargs) -> Episode:
  episode = random_episode(rng, steps, obs_shape=IMAGE, obs_dtype=np.uint8, **kwargs)
  episode.observation_features = rng.standard_normal((steps + 1, FEATURES)).astype(np.float32)
  return episode


def _spec(features: int = FEATURES) -> specs.EnvironmentSpec:
  return specs.EnvironmentSpec(
    observations={
      'features': specs.Array((features,), np.float32),
      'pixels': specs.BoundedArray(IMAGE, np.uint8, 0, 255),
    },
    actions=specs.BoundedArray((2,), np.float32, -1.0, 1.0),
    rewards=specs.Array((), np.float32),
    discounts=specs.BoundedArray((), np.float32, 0.0, 1.0),
  )


def test_the_store_keeps_the_features_bit_for_bit_and_refuses_bad_ones(tmp_path):
  rng = np.random.default_rng(0)
  episode = _episode(rng, 5)
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor') as writer:
    writer.append(episode)
    writer.append(random_episode(rng, 2))  # Episodes without them still store as before.
  with_features, without = list(store)
  assert with_features.observation_features.tobytes() == episode.observation_features.tobytes()
  assert with_features.observations.tobytes() == episode.observations.tobytes()
  assert without.observation_features is None
  observation = with_features.observation_at(2)
  assert set(observation) == {'features', 'pixels'}
  np.testing.assert_array_equal(observation['features'], episode.observation_features[2])
  bad = _episode(rng, 3)
  bad.observation_features = bad.observation_features[:-1]
  with pytest.raises(ValueError, match=r'observation_features: expected a float array \[4, F\]'):
    validate_episode(bad)
  bad = _episode(rng, 3)
  bad.observation_features[1, 2] = np.nan
  with pytest.raises(ValueError, match='observation_features: non-finite value at step 1'):
    validate_episode(bad)


def test_sampled_transitions_pair_each_image_with_its_own_features(tmp_path):
  rng = np.random.default_rng(1)
  store = EpisodeStore(tmp_path / 'store')
  episodes = [_episode(rng, steps) for steps in (4, 7)]
  with store.writer('actor') as writer:
    for episode in episodes:
      writer.append(episode)
    # One without features and one with another size: left out, said why (not poison: the
    # store is not the program's own here).
    writer.append(random_episode(rng, 3, obs_shape=IMAGE, obs_dtype=np.uint8))
    other = _episode(rng, 3)
    other.observation_features = np.zeros((4, FEATURES + 1), np.float32)
    writer.append(other)
  sampler = StoreSampler(store, n_step=2, discount=0.9, seed=0, spec=_spec())
  sampler.refresh()
  assert sampler.num_episodes == 2
  batch = sampler.all_transitions()
  pixels, features = batch.observation['pixels'], batch.observation['features']
  assert pixels.dtype == np.uint8 and features.dtype == np.float32
  assert pixels.shape[1:] == IMAGE and features.shape[1:] == (FEATURES,)
  # Each image's features are the ones stored with that very image, now and n steps on.
  by_image = {
    o.tobytes(): f.tobytes()
    for e in episodes
    for o, f in zip(e.observations, e.observation_features)
  }
  for image, row in zip(pixels, features):
    assert by_image[image.tobytes()] == row.tobytes()
  for image, row in zip(batch.next_observation['pixels'], batch.next_observation['features']):
    assert by_image[image.tobytes()] == row.tobytes()
  # Batches mixed with replay's (the same structure) are concatenated field by field.
  replay = iter([type('Sample', (), {'data': sampler.sample(3)})()])
  mixed = next(MixedBatches(replay, sampler, store_batch=5))
  assert mixed.observation['pixels'].shape == (8,) + IMAGE
  assert mixed.observation['features'].shape == (8, FEATURES)
  # An episode dropped later (quarantined): the arrays are rebuilt, the pairs stay.
  store.quarantine(store.index()[0].episode_id, 'test')
  sampler.refresh()
  batch = sampler.all_transitions()
  assert batch.observation['pixels'].shape[0] == 7 + 1  # the 7-step episode's (n=2: one more)
  for image, row in zip(batch.observation['pixels'], batch.observation['features']):
    assert by_image[image.tobytes()] == row.tobytes()
  # Without a spec, the first episode left decides: the others are unlike it.
  sampler = StoreSampler(store, n_step=1, discount=0.9, seed=0)
  sampler.refresh()
  assert sampler.num_episodes == 1


def test_rlds_export_tfds_reads_the_features_and_import_gives_them_back(tmp_path):
  import tensorflow_datasets as tfds  # Slow to import: this test only.

  rng = np.random.default_rng(2)
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor') as writer:
    for i, steps in enumerate((3, 5)):
      writer.append(_episode(rng, steps, metadata={'id': i}))
  stored = list(store)
  summary = export_rlds(iter(store), tmp_path / 'rlds', dataset_name='features_test')
  assert summary.spec.observation_features_shape == (FEATURES,)
  assert 'observation_features float32[3]' in summary.spec.describe()
  builder = tfds.builder_from_directory(str(tmp_path / 'rlds'))
  read = {}
  for example in tfds.as_numpy(builder.as_dataset(split='train')):
    steps = list(example['steps'])
    read[json.loads(example['episode_metadata']['metadata_json'])['id']] = steps
  for original in stored:
    steps = read[original.metadata['id']]
    features = np.stack([s['observation_features'] for s in steps])
    assert features.tobytes() == original.observation_features.tobytes()
    images = np.stack([s['observation'] for s in steps])
    assert images.tobytes() == original.observations.tobytes()
  episodes, report = import_rlds(tmp_path / 'rlds', on_error='refuse')
  assert report.ok and len(episodes) == 2
  for got, want in zip(sorted(episodes, key=lambda e: e.metadata['id']), stored):
    assert got.observation_features.tobytes() == want.observation_features.tobytes()
    assert episode_sha256(got) == episode_sha256(want)
  # The hash covers the features: the same images without them are another episode.
  bare = Episode(stored[0].observations, stored[0].actions, stored[0].rewards, stored[0].discounts)
  bare.metadata = stored[0].metadata
  assert episode_sha256(bare) != episode_sha256(stored[0])
  # A dataset whose spec says otherwise is refused, naming the difference.
  expected = EpisodeSpec(IMAGE, np.uint8, (2,), np.float32)
  with pytest.raises(RldsError, match='observation_features float32'):
    import_rlds(tmp_path / 'rlds', expected=expected)
