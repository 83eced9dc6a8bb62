"""Single-process tests of the environment factory, MPOBuilder and VariableClient.

Real pieces only: dm_control physics, an in-process Reverb server, the acme
EnvironmentLoop, the n-step adder, the TF dataset and the jitted learner.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator, List

import acme
import dm_env
import numpy as np
import pytest
import reverb
from acme import specs
from acme.utils import counting, loggers

from agents.common.config import merge_overrides
from agents.mpo.builder import MPOBuilder
from agents.mpo.config import MPOConfig
from agents.replay_pipeline import REPLAY_TABLE
from agents.variable_client import VariableClient
from environments import suite

TASK = 'cartpole:swingup'
EPISODE_LENGTH = 1000  # cartpole's time limit at the default control step


def _tiny_config(**overrides) -> MPOConfig:
  kwargs = dict(
    policy_layer_sizes=(32, 32),
    critic_layer_sizes=(32, 32),
    num_samples=8,
    replay=dict(
      batch_size=32, min_replay_size=100, max_replay_size=10_000, variable_update_period=10
    ),
  )
  return MPOConfig.from_dict(merge_overrides(MPOConfig, kwargs, overrides))


@contextlib.contextmanager
def _replay(builder: MPOBuilder) -> Iterator[str]:
  server = reverb.Server(builder.make_replay_tables(), port=None)
  try:
    yield f'localhost:{server.port}'
  finally:
    server.stop()


def _next_within(iterator, seconds: float):
  """next(iterator), failing the test instead of hanging if it blocks for `seconds`."""
  out = {}

  def run():
    try:
      out['value'] = next(iterator)
    except BaseException as e:  # pylint: disable=broad-except
      out['error'] = e

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    pytest.fail(f'the dataset iterator blocked for more than {seconds} s')
  if 'error' in out:
    raise out['error']
  return out['value']


# ---------------------------------------------------------------------------
# environments.suite
# ---------------------------------------------------------------------------


def test_environment_has_flat_float32_observations_and_unit_actions():
  env = suite.make_environment(TASK, seed=0)
  spec = specs.make_environment_spec(env)
  assert spec.observations.shape == (5,) and spec.observations.dtype == np.float32
  assert isinstance(spec.actions, specs.BoundedArray)
  assert spec.actions.shape == (1,) and spec.actions.dtype == np.float32
  np.testing.assert_array_equal(spec.actions.minimum, [-1.0])
  np.testing.assert_array_equal(spec.actions.maximum, [1.0])

  first = env.reset()
  assert first.first()
  assert first.observation.dtype == np.float32 and first.observation.shape == (5,)
  step = env.step(np.array([0.5], np.float32))
  assert step.observation.dtype == np.float32
  assert np.asarray(step.reward).dtype == np.float32
  assert 0.0 <= float(step.reward) <= 1.0


def test_environment_actions_beyond_the_unit_box_act_as_its_boundary():
  def second_observation(action):
    env = suite.make_environment(TASK, seed=3)
    env.reset()
    return env.step(np.array([action], np.float32)).observation

  np.testing.assert_array_equal(second_observation(5.0), second_observation(1.0))
  np.testing.assert_array_equal(second_observation(-7.0), second_observation(-1.0))
  assert not np.array_equal(second_observation(1.0), second_observation(-1.0))


def test_environment_seed_sets_the_initial_state():
  first = lambda seed: suite.make_environment(TASK, seed=seed).reset().observation
  np.testing.assert_array_equal(first(7), first(7))
  assert not np.array_equal(first(7), first(8))


@pytest.mark.parametrize(
  'task, listed',
  [
    ('cartpole:nope', ['cartpole:swingup', 'cartpole:balance']),
    ('cartpole', ['cartpole:swingup']),
    ('nodomain:walk', ['cartpole', 'walker', 'cheetah']),
  ],
)
def test_unknown_task_lists_the_valid_options(task, listed):
  with pytest.raises(ValueError) as info:
    suite.make_environment(task, seed=0)
  message = str(info.value)
  assert repr(task) in message
  for name in listed:
    assert name in message


def test_builder_rejects_non_flat_observations():
  spec = specs.make_environment_spec(suite.make_environment(TASK, seed=0))
  nested = spec._replace(observations={'position': spec.observations})
  with pytest.raises(ValueError, match='ConcatObservationWrapper'):
    MPOBuilder(_tiny_config(), nested)


# ---------------------------------------------------------------------------
# MPOBuilder end to end, one process.
# ---------------------------------------------------------------------------


class EpisodeRecorder:
  """An EnvironmentLoop observer keeping everything the actor saw and did."""

  def observe_first(self, env, timestep):
    self.observations = [timestep.observation]
    self.actions, self.rewards = [], []

  def observe(self, env, timestep, action):
    self.observations.append(timestep.observation)
    self.actions.append(np.array(action))
    self.rewards.append(float(timestep.reward))

  def get_metrics(self):
    return {}


class CountingSource:
  """A VariableSource forwarding to the learner and counting the fetches."""

  def __init__(self, learner):
    self.learner = learner
    self.fetches = 0

  def get_variables(self, names):
    self.fetches += 1
    return self.learner.get_variables(names)


def _check_n_step_transitions(batch, episode: EpisodeRecorder, config: MPOConfig):
  """Every sampled transition is the n-step transition of the recorded episode."""
  obs = np.stack(episode.observations)
  actions, rewards = np.stack(episode.actions), np.asarray(episode.rewards)
  steps, n, gamma = len(actions), config.replay.n_step, config.replay.discount
  for j in range(batch.observation.shape[0]):
    [i] = np.flatnonzero((obs == batch.observation[j]).all(axis=1))
    np.testing.assert_array_equal(batch.action[j], actions[i])
    [m] = [
      k
      for k in range(1, n + 1)
      if i + k < len(obs) and np.array_equal(obs[i + k], batch.next_observation[j])
    ]
    if i > 0:  # acme's adder also writes the 1..n-1 step transitions from the first state
      assert m == min(n, steps - i), (i, m)
    np.testing.assert_allclose(
      batch.reward[j], sum(gamma**k * rewards[i + k] for k in range(m)), rtol=1e-5
    )
    # gamma^(m-1): the learner applies the last factor itself (cartpole never terminates).
    np.testing.assert_allclose(batch.discount[j], gamma ** (m - 1), rtol=1e-6)


def test_builder_end_to_end_actor_replay_learner():
  config = _tiny_config(replay=dict(samples_per_insert=None))
  env = suite.make_environment(TASK, seed=0)
  builder = MPOBuilder(config, specs.make_environment_spec(env))
  nets = builder.make_networks()

  with _replay(builder) as address:
    client = reverb.Client(address)
    table = client.server_info()[REPLAY_TABLE]
    assert table.current_size == 0
    # No rate limiting: only a minimum size before sampling.
    assert table.rate_limiter_info.min_size_to_sample == config.replay.min_replay_size
    assert table.rate_limiter_info.min_diff == -sys.float_info.max

    consumed: List = []

    def recording(iterator):
      for sample in iterator:
        consumed.append(sample.data)
        yield sample

    counter = counting.Counter()
    learner = builder.make_learner(
      recording(builder.make_dataset_iterator(address)),
      counter=counter,
      logger=loggers.NoOpLogger(),
    )
    source = CountingSource(learner)
    actor = builder.make_actor(source, builder.make_adder(client), seed=1)
    evaluator = builder.make_actor(learner, None, deterministic=True)

    episode = EpisodeRecorder()
    result = acme.EnvironmentLoop(
      env, actor, observers=[episode], logger=loggers.NoOpLogger()
    ).run_episode()
    assert result['episode_length'] == EPISODE_LENGTH == len(episode.actions)
    # One transition per step, plus the adder's n-1 shorter ones from the first state.
    assert client.server_info()[REPLAY_TABLE].current_size == (
      EPISODE_LENGTH + config.replay.n_step - 1
    )
    # The first action fetched the parameters, then one refresh every period.
    assert source.fetches == 1 + EPISODE_LENGTH // config.replay.variable_update_period
    # The stochastic policy explores: its actions spread beyond the mean.
    assert np.std(np.stack(episode.actions)) > 0.3

    probe = episode.observations[0]
    [initial_policy] = learner.get_variables(['policy'])
    greedy_before = evaluator.select_action(probe)
    expected = np.asarray(nets.policy.apply(initial_policy, probe[None])[0])[0]
    np.testing.assert_allclose(greedy_before, expected, atol=1e-6)
    np.testing.assert_array_equal(greedy_before, evaluator.select_action(probe))

    for _ in range(3):
      learner.step()
    assert learner.steps == 3 and counter.get_counts()['steps'] == 3
    assert len(consumed) == 4  # three updates' batches and the next, drawn during the third
    for batch in consumed:
      assert batch.observation.shape == (config.replay.batch_size, 5)
      assert batch.action.shape == (config.replay.batch_size, 1)
      assert batch.reward.shape == batch.discount.shape == (config.replay.batch_size,)
      _check_n_step_transitions(batch, episode, config)
    sampled = client.server_info()[REPLAY_TABLE].rate_limiter_info.sample_stats.completed
    assert sampled >= 3 * config.replay.batch_size

    # The evaluator keeps its parameters until it is told to fetch.
    np.testing.assert_array_equal(evaluator.select_action(probe), greedy_before)
    evaluator.update()  # a deterministic actor only refreshes on update(wait=True)
    np.testing.assert_array_equal(evaluator.select_action(probe), greedy_before)
    evaluator.update(wait=True)
    greedy_after = evaluator.select_action(probe)
    [trained_policy] = learner.get_variables(['policy'])
    expected = np.asarray(nets.policy.apply(trained_policy, probe[None])[0])[0]
    np.testing.assert_allclose(greedy_after, expected, atol=1e-6)
    assert np.max(np.abs(greedy_after - greedy_before)) > 1e-5


# ---------------------------------------------------------------------------
# Rate limiting and the sampling timeout.
# ---------------------------------------------------------------------------


def _insert_steps(builder: MPOBuilder, client: reverb.Client, num_steps: int):
  """Writes one terminated episode of `num_steps` steps through the real n-step adder."""
  adder = builder.make_adder(client)
  obs = lambda t: np.full(5, t, np.float32)
  adder.add_first(dm_env.restart(obs(0)))
  action = np.zeros(1, np.float32)
  for t in range(1, num_steps):
    adder.add(action, dm_env.transition(np.float32(0.5), obs(t), np.float32(1.0)))
  # dm_env.termination would give a float64 discount; the table's signature wants float32.
  adder.add(
    action, dm_env.TimeStep(dm_env.StepType.LAST, np.float32(0.5), np.float32(0.0), obs(num_steps))
  )


def test_rate_limiter_enforces_the_ratio_and_sampling_times_out():
  config = _tiny_config(
    replay=dict(samples_per_insert=4.0, min_replay_size=100, batches_per_draw=4)
  )
  builder = MPOBuilder(config, specs.make_environment_spec(suite.make_environment(TASK, 0)))
  with _replay(builder) as address:
    client = reverb.Client(address)
    limiter = client.server_info()[REPLAY_TABLE].rate_limiter_info
    assert limiter.samples_per_insert == 4.0
    assert limiter.min_size_to_sample == 100
    # SampleToInsertRatio: diff kept within offset +- error_buffer, offset = 4 * 100.
    replay = config.replay
    error_buffer = max(100 * replay.samples_per_insert_tolerance * 4.0, 2 * replay.batch_size)
    assert limiter.min_diff == pytest.approx(400 - error_buffer)
    assert limiter.max_diff == pytest.approx(400 + error_buffer)

    # Empty table: the iterator gives up after the timeout instead of hanging.
    iterator = builder.make_dataset_iterator(address, rate_limiter_timeout_ms=200)
    start = time.monotonic()
    with pytest.raises(StopIteration):
      _next_within(iterator, 30.0)
    assert time.monotonic() - start < 5.0

    # 116 steps -> 120 items: 4 * 120 - (400 - error_buffer) = 280 samples are allowed,
    # and then the limiter blocks until more is inserted. The iterator hands out whole
    # draws of replay.batches_per_draw batches: those it could complete.
    _insert_steps(builder, client, 116)
    assert client.server_info()[REPLAY_TABLE].current_size == 120
    iterator = builder.make_dataset_iterator(address, rate_limiter_timeout_ms=200)
    batches = 0
    with pytest.raises(StopIteration):
      while True:
        batch = _next_within(iterator, 30.0).data
        assert batch.observation.shape == (config.replay.batch_size, 5)
        batches += 1
        assert batches <= 100
    allowed = 4 * 120 - (400 - error_buffer)
    draws = config.replay.batches_per_draw
    assert draws == 4
    assert batches == allowed // (draws * config.replay.batch_size) * draws > 0

    # More inserts unblock sampling again (40 items allow 160 samples: a draw of 128).
    _insert_steps(builder, client, 40)
    iterator = builder.make_dataset_iterator(address, rate_limiter_timeout_ms=200)
    assert _next_within(iterator, 30.0).data.observation.shape == (config.replay.batch_size, 5)


# ---------------------------------------------------------------------------
# VariableClient.
# ---------------------------------------------------------------------------


class Source:
  """A variable source whose values carry a version number; it can be made to fail."""

  def __init__(self):
    self.calls = 0
    self.version = 1
    self.fail = False

  def get_variables(self, names):
    self.calls += 1
    if self.fail:
      raise ConnectionError('learner unavailable')
    return [{'w': np.full(2, self.version, np.float32), 'name': name} for name in names]


def test_variable_client_fetches_every_update_period():
  source = Source()
  client = VariableClient(source, ['policy'], update_period=3)
  assert source.calls == 0  # nothing fetched before it is needed
  assert client.params['name'] == 'policy'
  assert source.calls == 1 and client.num_updates == 1

  fetched_at = []
  for call in range(1, 10):
    source.version = 1 + call
    before = source.calls
    client.update()
    if source.calls > before:
      fetched_at.append(call)
      np.testing.assert_array_equal(client.params['w'], [1 + call] * 2)
  assert fetched_at == [3, 6, 9]
  assert client.num_updates == 4
  np.testing.assert_array_equal(client.params['w'], [10, 10])
  assert source.calls == 4  # reading params does not fetch

  source.version = 42
  client.update(wait=True)  # wait forces a fetch
  assert source.calls == 5
  np.testing.assert_array_equal(client.params['w'], [42, 42])


def test_variable_client_keeps_old_params_when_the_source_fails():
  source = Source()
  client = VariableClient(source, ['policy'], update_period=2)
  client.update()
  np.testing.assert_array_equal(client.params['w'], [1, 1])

  source.fail = True
  source.version = 2
  for _ in range(6):
    client.update()  # must not raise
  assert source.calls == 1 + 3  # it kept trying once per period
  assert client.num_updates == 1
  np.testing.assert_array_equal(client.params['w'], [1, 1])
  with pytest.raises(ConnectionError):
    client.update(wait=True)  # an explicit wait insists on fresh parameters
  np.testing.assert_array_equal(client.params['w'], [1, 1])

  source.fail = False
  client.update()
  client.update()
  np.testing.assert_array_equal(client.params['w'], [2, 2])
  assert client.num_updates == 2


def test_variable_client_raises_when_the_first_fetch_fails():
  source = Source()
  source.fail = True
  client = VariableClient(source, ['policy'], update_period=5)
  with pytest.raises(ConnectionError):
    client.update()
  with pytest.raises(ConnectionError):
    _ = client.params
  source.fail = False
  assert client.params['name'] == 'policy'


def test_variable_client_with_several_names_returns_a_list():
  source = Source()
  client = VariableClient(source, ['policy', 'critic'])
  policy, critic = client.params
  assert (policy['name'], critic['name']) == ('policy', 'critic')


def test_config_selects_the_perceiver_with_the_tasks_observation_groups():
  import jax

  from launch import experiment
  from launch.config import ExperimentConfig

  cfg = ExperimentConfig(task='walker:walk', agent={'network': 'perceiver', 'replay.batch_size': 8})
  builder = experiment.make_builder(cfg)
  # walker: height (1), orientations (14), velocity (9), in sorted-key order.
  assert builder.obs_group_sizes == (1, 14, 9)
  networks = builder.make_networks()
  obs = np.zeros((2, 24), np.float32)
  params = networks.critic.init(jax.random.PRNGKey(0), obs, np.zeros((2, 6), np.float32))
  assert any('attention' in name or 'latent' in name for name in params), list(params)
  logits = networks.critic.apply(params, obs, np.zeros((5, 2, 6), np.float32))
  assert logits.shape == (5, 2, 51)
