"""A robot's camera images with state features beside them (a --pixel_features run): over
the wire, into the program's store and replay, every field checked against the spec."""

import numpy as np
import pytest
import reverb
import tree
from acme import specs
from acme.adders import reverb as reverb_adders

from launch.robot import protocol
from launch.robot.frame import FrameLimits
from launch.robot.sink import ExternalEpisodeSink
from launch.robot.wire import (
  ALL_ARRAY_FIELDS,
  EPISODE_KEY,
  episode_nbytes,
  episode_timesteps,
  episode_to_data,
)
from launch.store.episodes import EpisodeStore
from tests.fakes import random_episode

IMAGE = (4, 4, 3)
SPEC = specs.EnvironmentSpec(
  observations={
    'features': specs.Array((2,), np.float32, name='features'),
    'pixels': specs.BoundedArray(IMAGE, np.uint8, 0, 255, name='pixels'),
  },
  actions=specs.BoundedArray((1,), np.float32, -1.0, 1.0, name='action'),
  rewards=specs.Array((), np.float32, name='reward'),
  discounts=specs.BoundedArray((), np.float32, 0.0, 1.0, name='discount'),
)
LIMITS = FrameLimits(max_array_bytes=1 << 20, max_arrays=len(ALL_ARRAY_FIELDS))


def _episode(steps: int = 6, seed: int = 0):
  rng = np.random.default_rng(seed)
  episode = random_episode(rng, steps, obs_shape=IMAGE, obs_dtype=np.uint8, action_shape=(1,))
  episode.observation_features = rng.standard_normal((steps + 1, 2)).astype(np.float32)
  episode.metadata = {'source': 'arm1', 'task': 'cartpole:swingup', EPISODE_KEY: f'tok:{seed}'}
  return episode


def _over_the_wire(episode):
  """What the gateway's sink receives for `episode`, sent as attach sends it."""
  buffer = protocol.episode_request('arm1', episode_to_data(episode))
  robot, data = protocol.read_episode_request(buffer, LIMITS)
  assert robot == 'arm1'
  return data


def test_the_features_travel_and_are_stored_bit_for_bit(tmp_path):
  episode = _episode()
  assert episode_nbytes(episode) == episode.observations.nbytes + 7 * 2 * 4 + 6 * (4 + 4 + 4)
  sink = ExternalEpisodeSink(tmp_path / 'store', SPEC)
  reply = sink.append('arm1', _over_the_wire(episode))
  assert reply['status'] == 'stored', reply
  stored = EpisodeStore(tmp_path / 'store').read(reply['id'])
  assert stored.observation_features.tobytes() == episode.observation_features.tobytes()
  assert stored.observations.tobytes() == episode.observations.tobytes()


@pytest.mark.parametrize(
  'change, reason',
  [
    (
      lambda e: setattr(e, 'observation_features', None),
      'observation_features: the program observes images with state features beside them',
    ),
    (
      lambda e: setattr(e, 'observation_features', e.observation_features[:, :1].copy()),
      'observation_features: expected shape (7, 2) and dtype float32, got (7, 1) float32',
    ),
    (
      lambda e: e.observation_features.__setitem__((3, 1), np.inf),
      'step 3: observation_features[1] = inf: not finite',
    ),
  ],
)
def test_bad_features_are_rejected_naming_the_field_and_step(tmp_path, change, reason):
  episode = _episode()
  change(episode)
  reply = ExternalEpisodeSink(tmp_path / 'store', SPEC).append('arm1', _over_the_wire(episode))
  assert reply['status'] == 'rejected' and reason in reply['reason'], reply
  assert not (tmp_path / 'store').exists() or not len(EpisodeStore(tmp_path / 'store'))


def test_features_sent_to_a_program_without_them_are_rejected(tmp_path):
  flat = SPEC._replace(observations=SPEC.observations['pixels'])
  reply = ExternalEpisodeSink(tmp_path / 'store', flat).append('arm1', _over_the_wire(_episode()))
  assert reply['status'] == 'rejected'
  assert 'observation_features: the program takes no state features' in reply['reason']


def test_replay_gets_each_image_with_its_own_features():
  """The gateway's inserter feeds episode_timesteps to acme's adder (the external table)."""
  episode = _episode(steps=4)
  signature = reverb_adders.NStepTransitionAdder.signature(SPEC)
  server = reverb.Server([reverb.Table.queue('robot_table', 100, signature=signature)], port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = reverb_adders.NStepTransitionAdder(
      client, n_step=1, discount=0.99, priority_fns={'robot_table': None}
    )
    first, rest = episode_timesteps(episode)
    adder.add_first(first)
    for action, timestep in rest:
      adder.add(action, timestep)
    del adder
    samples = list(client.sample('robot_table', num_samples=4, emit_timesteps=False))
  finally:
    server.stop()
  assert len(samples) == 4
  for sample in samples:
    observation = tree.unflatten_as(signature, sample.data).observation
    t = next(
      t for t in range(5) if observation['pixels'].tobytes() == episode.observations[t].tobytes()
    )
    np.testing.assert_array_equal(observation['features'], episode.observation_features[t])
