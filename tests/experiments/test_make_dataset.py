"""Offline datasets built from a run: real checkpoints, real physics, a real episode store."""

import json

import numpy as np
import pytest

from experiments.make_dataset import build_dataset
from launch import experiment
from launch.checkpointing import Checkpointer
from launch.config import ExperimentConfig
from agents.common.errors import ConfigError
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from tests.fakes import TINY_AGENT


@pytest.fixture(scope='module')
def run_with_two_checkpoints(tmp_path_factory):
  path = tmp_path_factory.mktemp('run')
  cfg = ExperimentConfig(run_dir=str(path), agent=TINY_AGENT)
  rd = RunDir(str(path))
  rd.create()
  rd.write_config(cfg.to_dict())
  builder = experiment.make_builder(cfg)
  ckpt = Checkpointer(rd.checkpoints)
  for step, seed in ((10, 1), (20, 2)):
    state = builder.make_learner(iter(()), seed=seed).save()
    ckpt.save({'learner_state': state, 'learner_steps': step}, step)
  return path


def test_expert_and_mixed_datasets_record_their_sources(run_with_two_checkpoints, tmp_path):
  out = tmp_path / 'mixed'
  manifest = build_dataset(str(run_with_two_checkpoints), 'mixed', 3, str(out),
                           poor_fraction=1 / 3, noise=0.5)
  store = EpisodeStore(out)
  assert len(store) == 3 == manifest['num_episodes']
  policies = [info.metadata['policy'] for info in store.index()]
  assert policies.count('early_checkpoint_noisy') == 1 and policies.count('final_checkpoint') == 2
  steps = sorted(info.metadata['checkpoint_step'] for info in store.index())
  assert steps == [10, 20, 20]
  on_disk = json.loads((out / 'manifest.json').read_text())
  stored_returns = sorted(info.episode_return for info in store.index())
  np.testing.assert_allclose(sorted(e['episode_return'] for e in on_disk['episodes']),
                             stored_returns, rtol=1e-5)
  episode = store.read(store.index()[0].episode_id)
  assert episode.actions.shape == (1000, 1) and episode.observations.shape == (1001, 5)
  assert np.all(np.abs(episode.actions) <= 1.0)


def test_random_dataset_needs_no_checkpoint_and_bad_input_is_refused(tmp_path,
                                                                     run_with_two_checkpoints):
  manifest = build_dataset(str(run_with_two_checkpoints), 'random', 1, str(tmp_path / 'random'))
  assert manifest['episodes'][0]['policy'] == 'random'
  with pytest.raises(ConfigError, match='not empty'):
    build_dataset(str(run_with_two_checkpoints), 'random', 1, str(tmp_path / 'random'))
  with pytest.raises(ConfigError, match='not a run directory'):
    build_dataset(str(tmp_path / 'nowhere'), 'expert', 1, str(tmp_path / 'x'))
  with pytest.raises(ConfigError, match='kind'):
    build_dataset(str(run_with_two_checkpoints), 'great', 1, str(tmp_path / 'y'))
