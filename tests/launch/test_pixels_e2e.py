"""End-to-end from pixels: the real program on cartpole:swingup seen through a 16x16 camera,
with the task's state features beside the images (--pixel_features: a superset of a run of
images alone, whose pieces in-process tests cover: tests/experiments/test_throughput_benchmark
runs a pixel actor with its adder and store, tests/networks/test_pixel_networks its learner)."""

import numpy as np
import pytest
from PIL import Image

from launch.checkpointing import Checkpointer
from launch.store.episodes import EpisodeStore
from tests.e2e_util import read_counts, run_to_end

pytestmark = pytest.mark.slow

PIXELS = [
  '--pixels',
  '--pixel_size=16',
  '--frame_stack=2',
  '--action_repeat=20',  # 50 actions an episode: few renders
  '--num_actors=1',
  '--max_actor_steps=60',  # two episodes
  '--eval_every_seconds=2',
  '--eval_episodes=1',
  '--agent',
  'policy_layer_sizes=[16]',
  '--agent',
  'critic_layer_sizes=[16]',
  '--agent',
  'encoder.channels=[4,4]',
  '--agent',
  'encoder.feature_dim=8',
  '--agent',
  'num_samples=4',
  '--agent',
  'replay.batch_size=16',
  '--agent',
  'replay.min_replay_size=50',
]


def test_a_pixel_run_trains_on_images_and_features_stores_both_and_writes_videos(tmp_path):
  run = run_to_end(
    tmp_path / 'run', *PIXELS, '--pixel_features', '--agent', 'replay.n_step=2', timeout=600
  )
  assert run.returncode == 0, run.text[-5000:]
  counts = read_counts(run.run_dir)
  assert counts['actor_steps'] >= 60 and counts['learner_steps'] > 0, counts
  # The store holds the camera images as uint8, compressed.
  store = EpisodeStore(run.run_dir / 'store')
  infos = store.index()
  assert len(infos) >= 2
  episode = store.read(infos[0].episode_id)
  assert episode.observations.dtype == np.uint8
  assert episode.observations.shape == (51, 16, 16, 6)
  # zlib at 16x16 from cartpole's default camera (its turning view changes the whole
  # background): ~1.75x on a random episode; the fixed camera 0 gives ~13x.
  assert infos[0].size < episode.observations.nbytes / 1.25
  # Cartpole's 5 state features beside each image, row for row.
  assert episode.observation_features.shape == (51, 5)
  assert episode.observation_features.dtype == np.float32
  assert np.ptp(episode.observation_features[:, 0]) > 0  # the cart moved
  # The learner trained the encoder that the policy reads: the critic's, shared.
  step, payload = Checkpointer(run.run_dir / 'checkpoints').restore_latest()
  state = payload['learner_state']
  encoder = [k for k in state.policy_params if k.startswith('encoder')]
  assert encoder and step > 0
  for k in encoder:
    for name, value in state.policy_params[k].items():
      np.testing.assert_array_equal(value, state.critic_params[k][name])
  # The heads read the features: the layer after the encoder takes its 8 and 5 more.
  assert state.policy_params['policy_torso/linear']['w'].shape[0] == 8 + 5
  assert state.critic_params['critic_torso/linear']['w'].shape[0] == 8 + 5 + 1  # + the action
  # One GIF per evaluation, named by learner step, of the run's own 16x16 frames.
  gifs = sorted((run.run_dir / 'videos').glob('step_*.gif'))
  assert gifs, run.text[-3000:]
  assert all(0 <= int(p.stem[len('step_') :]) <= step for p in gifs)
  gif = Image.open(gifs[0])
  assert gif.size == (16, 16) and 1 < gif.n_frames <= 51
  # Pillow merges repeated frames, adding up their times: 51 frames of 20 control steps.
  total_ms = 0
  for i in range(gif.n_frames):
    gif.seek(i)
    total_ms += gif.info['duration']
  assert total_ms == 51 * 200
