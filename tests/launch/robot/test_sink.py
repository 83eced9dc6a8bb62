"""The program's sink for robots' episodes against bad input: it stores nothing the learner
cannot use later, and says which robot, episode, field and step were wrong (a real store)."""

import time

import numpy as np
import pytest
from acme import specs

from agents.common.errors import ConfigError
from agents.mpo.labels import episode_success
from launch.config import ExperimentConfig
from launch.robot.sink import ExternalEpisodeSink
from launch.robot.wire import EPISODE_KEY, EpisodeLimits, episode_to_data
from launch.store.episodes import EpisodeStore
from tests.fakes import random_episode

SPEC = specs.EnvironmentSpec(
  observations=specs.BoundedArray((3,), np.float32, -10.0, 10.0, name='observations'),
  actions=specs.BoundedArray((1,), np.float32, -1.0, 1.0, name='action'),
  rewards=specs.Array((), np.float32, name='reward'),
  discounts=specs.BoundedArray((), np.float32, 0.0, 1.0, name='discount'),
)
LIMITS = EpisodeLimits(max_steps=50, max_bytes=1 << 20)


def _data(key: str, steps: int = 10, **metadata):
  """An episode as attach sends it: every metadata key attach writes."""
  episode = random_episode(
    np.random.default_rng(steps), steps, obs_shape=(3,), action_shape=(1,), reward=0.5
  )
  data = episode_to_data(episode)
  data['metadata'] = {
    'robot': 'arm1',
    'task': 'cartpole:swingup',
    'host': 'robot-pc',
    'control_hz': 50.0,
    'source': 'arm1',
    'episode_start_time': 1.0,
    'buffered_time': 2.0,
    'sent_time': 3.0,
    'policy_version': [3, 4],
    'invalid_step': 'step 5: observation[2] = nan: not finite',
    'success': True,
    EPISODE_KEY: key,
    **metadata,
  }
  return data


def _poison(key, change):
  data = _data(key)
  change(data)
  return data


def _set(field, index, value):
  def change(data):
    data[field][index] = value

  return change


POISON = [
  # (what, change, the reason after 'arm1: episode <key>: ')
  (
    'success not a bool',
    lambda d: d['metadata'].update(success='yes'),
    "metadata['success'] = 'yes': expected true / false (or 1 / 0)",
  ),
  (
    'policy_version of strings',
    lambda d: d['metadata'].update(policy_version=['a', 1]),
    "metadata['policy_version'] = ['a', 1]: expected [first, last] learner steps (ints >= 0, "
    'first <= last)',
  ),
  (
    'task a number',
    lambda d: d['metadata'].update(task=5),
    "metadata['task'] = 5: expected a string",
  ),
  (
    'source a list',
    lambda d: d['metadata'].update(source=['arm2']),
    "metadata['source'] = ['arm2']: expected a string",
  ),
  (
    'unknown key with nested data',
    lambda d: d['metadata'].update(extra={'a': 1}),
    "metadata['extra'] = {'a': 1}: expected a JSON scalar (string, number, bool)",
  ),
  (
    'NaN observation',
    _set('observations', (5, 2), np.nan),
    'step 5: observations[2] = nan: not finite',
  ),
  (
    'observation out of bounds',
    _set('observations', (4, 0), 11.0),
    'step 4: observations[0] = 11.0: outside the bounds [-10.0, 10.0]',
  ),
  ('infinite reward', _set('rewards', 7, np.inf), 'step 7: rewards = inf: not finite'),
  (
    'discount above 1',
    _set('discounts', 3, 1.5),
    'step 3: discounts = 1.5: outside the bounds [0.0, 1.0]',
  ),
  (
    'negative discount',
    _set('discounts', 2, -0.5),
    'step 2: discounts = -0.5: outside the bounds [0.0, 1.0]',
  ),
  (
    'action out of bounds',
    _set('actions', (6, 0), 2.0),
    'step 6: actions[0] = 2.0: outside the bounds [-1.0, 1.0]',
  ),
  (
    'float64 observations',
    lambda d: d.update(observations=d['observations'].astype(np.float64)),
    'observations: expected shape (11, 3) and dtype float32, got (11, 3) float64',
  ),
  (
    'one observation too few',
    lambda d: d.update(observations=d['observations'][:-1]),
    'observations: expected shape (11, 3) and dtype float32, got (10, 3) float32',
  ),
  (
    'a list, not an array',
    lambda d: d.update(rewards=d['rewards'].tolist()),
    'rewards: expected an array, got list',
  ),
  (
    'an object array',
    lambda d: d.update(actions=d['actions'].astype(object)),
    'actions: dtype object is not a plain numeric dtype',
  ),
  ('a field missing', lambda d: d.pop('discounts'), 'not an episode: missing discounts'),
  (
    'a field too many',
    lambda d: d.update(code=np.zeros(1)),
    'not an episode: unexpected field(s) code',
  ),
  (
    'huge metadata',
    lambda d: d['metadata'].update(note='x' * 20_000),
    'metadata: 2',
  ),  # The size, checked before the schema.
]


@pytest.fixture(name='sink')
def _sink(tmp_path):
  sink = ExternalEpisodeSink(tmp_path / 'store', SPEC, LIMITS)
  yield sink
  sink.close()


@pytest.mark.parametrize('what,change,reason', POISON, ids=[p[0] for p in POISON])
def test_sink_rejects_a_poison_episode_naming_robot_episode_field_and_step(
  sink, tmp_path, what, change, reason
):
  del what
  reply = sink.append('arm1', _poison('tok:e1', change))
  assert reply['status'] == 'rejected', reply
  assert reply['reason'].startswith(f'arm1: episode tok:e1: {reason}'), reply['reason']
  # Nothing of it reached the store, and a good episode still goes in.
  assert len(EpisodeStore(tmp_path / 'store')) == 0
  assert sink.append('arm1', _data('tok:e2'))['status'] == 'stored'
  [info] = EpisodeStore(tmp_path / 'store').index()
  assert info.metadata[EPISODE_KEY] == 'tok:e2'


def test_sink_stores_what_the_learner_can_use(sink, tmp_path):
  # Labels of either spelling, unknown plain tags, a bare episode without optional tags.
  assert sink.append('arm1', _data('tok:1', success=1, operator='ann', shift=2))['status'] == (
    'stored'
  )
  bare = _data('tok:2')
  bare['metadata'] = {EPISODE_KEY: 'tok:2'}
  assert sink.append('arm1', bare)['status'] == 'stored'
  infos = EpisodeStore(tmp_path / 'store').index()
  assert [i.metadata[EPISODE_KEY] for i in infos] == ['tok:1', 'tok:2']
  # What the learner's store sampler does with each at start-up: no error.
  assert [episode_success(i.metadata, i.episode_return, 0.0) for i in infos] == [True, True]


def test_sink_checks_sizes_before_touching_the_arrays(sink, tmp_path):
  # 300 MB of observations that take no memory (a broadcast view): refused at once.
  data = _data('tok:big')
  data['observations'] = np.broadcast_to(np.float32(0.0), (15_000_001, 5))
  data['actions'] = np.broadcast_to(np.float32(0.0), (15_000_000, 1))
  data['rewards'] = np.broadcast_to(np.float32(0.0), (15_000_000,))
  data['discounts'] = np.broadcast_to(np.float32(1.0), (15_000_000,))
  start = time.monotonic()
  reply = sink.append('arm1', data)
  assert time.monotonic() - start < 0.5
  assert reply == {
    'status': 'rejected',
    'reason': 'arm1: episode tok:big: actions: 15000000 steps, more than the limit of 50',
  }
  # Within the step limit, over the byte limit.
  data = _data('tok:wide', steps=40)
  data['observations'] = np.broadcast_to(np.float32(0.0), (41, 10_000))
  reply = sink.append('arm1', data)
  assert reply['reason'] == (
    f'arm1: episode tok:wide: {41 * 10_000 * 4 + 40 * 12} bytes of arrays, more than the '
    f'limit of {1 << 20}'
  )
  too_long = _data('tok:long', steps=51)
  assert sink.append('arm1', too_long)['reason'] == (
    'arm1: episode tok:long: actions: 51 steps, more than the limit of 50'
  )
  missing = _data('tok:x')
  del missing['metadata'][EPISODE_KEY]
  assert sink.append('arm1', missing)['reason'] == (
    f'arm1: episode ?: metadata {EPISODE_KEY!r} is missing'
  )
  assert len(EpisodeStore(tmp_path / 'store')) == 0


def test_episode_limits_are_settings():
  config = ExperimentConfig()
  assert config.external_max_episode_steps == 100_000
  assert config.external_max_episode_mb == 64.0
  with pytest.raises(ConfigError, match='external_max_episode_steps'):
    ExperimentConfig.from_dict(dict(external_max_episode_steps=0))
  with pytest.raises(ConfigError, match='external_max_episode_mb'):
    ExperimentConfig.from_dict(dict(external_max_episode_mb=-1))
