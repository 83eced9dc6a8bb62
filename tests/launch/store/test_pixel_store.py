"""Camera images in the episode store: uint8 in, uint8 out, compressed per episode."""

import dataclasses
import json

import numpy as np
import pytest
from acme import specs

from environments.pixels import PixelSettings, make_pixel_environment
from launch.robot.spec import spec_differences, spec_to_data
from launch.robot.wire import check_episode
from launch.store.episodes import Episode, EpisodeStore, EpisodeWriter
from launch.store.rlds_export import export_rlds
from launch.store.rlds_import import import_rlds
from launch.store.sampling import StoreSampler


def _pixel_episode(steps: int) -> Episode:
  env = make_pixel_environment('cartpole:swingup', 1, PixelSettings(size=16, frame_stack=2))
  rng = np.random.default_rng(0)
  observations, actions, rewards = [env.reset().observation], [], []
  for _ in range(steps):
    action = rng.uniform(-1, 1, (1,)).astype(np.float32)
    timestep = env.step(action)
    observations.append(timestep.observation)
    actions.append(action)
    rewards.append(timestep.reward)
  return Episode(
    observations=np.stack(observations),
    actions=np.stack(actions),
    rewards=np.asarray(rewards, np.float32),
    discounts=np.ones(steps, np.float32),
    metadata={'task': 'cartpole:swingup'},
  )


@pytest.fixture(scope='module')
def episode() -> Episode:
  return _pixel_episode(15)


def test_images_round_trip_bit_exact_and_compressed(tmp_path, episode):
  (tmp_path / 'store').mkdir()
  with EpisodeWriter(tmp_path / 'store', 'actor_0') as writer:
    episode_id = writer.append(episode)
  store = EpisodeStore(tmp_path / 'store')
  back = store.read(episode_id)
  assert back.observations.dtype == np.uint8 and back.observations.shape == (16, 16, 16, 6)
  np.testing.assert_array_equal(back.observations, episode.observations)
  np.testing.assert_array_equal(back.actions, episode.actions)
  back.observations[0, 0, 0, 0] ^= 1  # writable, as raw arrays are
  (info,) = store.index()
  # Rendered frames are mostly flat colour: far smaller than their raw bytes.
  assert info.size < episode.observations.nbytes / 2


def test_rlds_export_compresses_images_and_reads_back(tmp_path, episode):
  summary = export_rlds([episode], tmp_path / 'rlds')
  features = json.loads((tmp_path / 'rlds' / 'features.json').read_text())
  steps = features['featuresDict']['features']['steps']['sequence']['feature']
  observation = steps['featuresDict']['features']['observation']['tensor']
  assert (observation['dtype'], observation['encoding']) == ('uint8', 'zlib')
  assert summary.num_bytes < episode.observations.nbytes  # int64 values would take 8x
  (back,), _ = import_rlds(tmp_path / 'rlds', on_error='refuse')
  assert back.observations.dtype == np.uint8
  np.testing.assert_array_equal(back.observations, episode.observations)


def test_a_robot_camera_episode_is_checked_for_shape_and_dtype(episode):
  """What the gateway checks on arrival, and attach before it starts, for a pixel program."""
  program = make_pixel_environment('cartpole:swingup', 1, PixelSettings(size=16, frame_stack=2))
  spec = specs.make_environment_spec(program)
  assert check_episode(episode, spec) is None
  as_float = dataclasses.replace(episode, observations=episode.observations.astype(np.float32))
  assert check_episode(as_float, spec) == (
    'observations: expected shape (16, 16, 16, 6) and dtype uint8, got (16, 16, 16, 6) float32'
  )
  smaller = make_pixel_environment('cartpole:swingup', 1, PixelSettings(size=8, frame_stack=2))
  differences = spec_differences(
    spec_to_data(spec), spec_to_data(specs.make_environment_spec(smaller))
  )
  assert differences and 'observations' in differences[0] and '(16, 16, 6)' in differences[0]


def test_the_learner_samples_stored_images_as_uint8(tmp_path, episode):
  (tmp_path / 'store').mkdir()
  with EpisodeWriter(tmp_path / 'store', 'actor_0') as writer:
    writer.append(episode)
  program = make_pixel_environment('cartpole:swingup', 1, PixelSettings(size=16, frame_stack=2))
  sampler = StoreSampler(
    EpisodeStore(tmp_path / 'store'), n_step=1, discount=0.99, seed=0,
    spec=specs.make_environment_spec(program),
  )  # fmt: skip
  assert sampler.refresh() == 1
  batch = sampler.sample(8)
  assert batch.observation.dtype == np.uint8 and batch.observation.shape == (8, 16, 16, 6)
  # Each sampled pair is a stored step and the one after it.
  for obs, next_obs in zip(batch.observation, batch.next_observation):
    (t,) = [i for i in range(15) if np.array_equal(episode.observations[i], obs)][:1]
    np.testing.assert_array_equal(next_obs, episode.observations[t + 1])
