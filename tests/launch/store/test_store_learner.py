"""The learner's start-up on a store holding episodes it can't use: real files, real Reverb."""

import dataclasses

import numpy as np
import pytest
import reverb

from agents.common.errors import ConfigError
from launch import experiment
from launch.config import ExperimentConfig
from launch.nodes.counter import PersistentCounter
from launch.nodes.learner import LearnerWorker
from launch.run_dir import RunDir
from launch.store.episodes import Episode, EpisodeStore
from tests.fakes import tiny_config


def _episode(spec, rng, length=6, **metadata) -> Episode:
  obs = spec.observations
  act = spec.actions
  return Episode(
    observations=rng.normal(size=(length + 1,) + obs.shape).astype(obs.dtype),
    actions=rng.uniform(-1, 1, size=(length,) + act.shape).astype(act.dtype),
    rewards=rng.normal(size=length).astype(np.float32),
    discounts=np.ones(length, np.float32),
    metadata=dict(source='actor_0', **metadata),
  )


def test_poison_in_the_runs_store_is_quarantined_and_the_learner_starts(tmp_path):
  cfg = tiny_config(tmp_path / 'run', mode='offline', max_learner_steps=10, store_memory_gb=0.5)
  spec = experiment.make_builder(cfg).spec
  rng = np.random.default_rng(0)
  store = EpisodeStore(RunDir(cfg.run_dir).store)
  with store.writer('robot_0') as writer:
    good = [writer.append(_episode(spec, rng)) for _ in range(3)]
    wide = _episode(spec, rng)
    wide = dataclasses.replace(
      wide, observations=np.concatenate([wide.observations, wide.observations], axis=1)
    )
    wrong_shape = writer.append(wide)
    far = _episode(spec, rng)
    far.discounts[0] = 2.0
    bad_discount = writer.append(far)
  server = reverb.Server(experiment.make_builder(cfg).make_replay_tables(), port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    for _ in range(2):  # Start-up, and a restart: neither raises.
      learner = LearnerWorker(cfg.to_dict(), client, PersistentCounter(str(tmp_path)))
      sampler = learner._sampler  # pylint: disable=protected-access
      assert sampler.num_episodes == 3
      assert sampler._cap == 2**29  # pylint: disable=protected-access
      quarantined = EpisodeStore(store.directory).quarantined()
      assert set(quarantined) == {wrong_shape, bad_discount}
      assert 'does not match the program: observation shape' in quarantined[wrong_shape]
      assert [i.episode_id for i in EpisodeStore(store.directory).index()] == good
  finally:
    server.stop()


def test_the_memory_cap_setting_is_checked():
  with pytest.raises(ConfigError, match='store_memory_gb'):
    ExperimentConfig.from_dict(dict(store_memory_gb=0))
  assert ExperimentConfig().store_memory_gb == 4.0


def test_an_offline_learner_trains_on_stored_images_with_their_features(tmp_path):
  """A --pixel_features run's store: the learner's sampler gives {'features', 'pixels'}."""
  cfg = tiny_config(
    tmp_path / 'run',
    mode='offline',
    max_learner_steps=3,
    pixels=True,
    pixel_features=True,
    pixel_size=16,
    frame_stack=1,
    agent={
      'policy_layer_sizes': [8],
      'critic_layer_sizes': [8],
      'encoder.channels': [4],
      'encoder.feature_dim': 4,
      'num_samples': 2,
      'replay.batch_size': 4,
      'replay.samples_per_insert': None,
    },
  )
  spec = experiment.make_builder(cfg).spec
  assert set(spec.observations) == {'features', 'pixels'}
  rng = np.random.default_rng(1)
  store = EpisodeStore(RunDir(cfg.run_dir).store)
  with store.writer('actor_0') as writer:
    for _ in range(2):
      writer.append(
        Episode(
          observations=rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8),
          observation_features=rng.normal(size=(7, 5)).astype(np.float32),
          actions=rng.uniform(-1, 1, (6, 1)).astype(np.float32),
          rewards=rng.normal(size=6).astype(np.float32),
          discounts=np.ones(6, np.float32),
          metadata={'source': 'actor_0'},
        )
      )
  server = reverb.Server(experiment.make_builder(cfg).make_replay_tables(), port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    learner = LearnerWorker(cfg.to_dict(), client, PersistentCounter(str(tmp_path)))
    before = learner.get_variables(['policy'])[0]
    for _ in range(3):
      learner._step()  # pylint: disable=protected-access
    assert learner.steps() == 3
    after = learner.get_variables(['policy'])[0]
    # The heads took the features: 4 encoder features and 5 state features in.
    assert after['policy_torso/linear']['w'].shape[0] == 4 + 5
    assert not np.allclose(before['policy_torso/linear']['w'], after['policy_torso/linear']['w'])
  finally:
    server.stop()
