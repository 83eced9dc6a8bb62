"""Attached (external) actors, piece by piece, in one process: a real Reverb server, a real
learner, the real gateway node serving robots on 127.0.0.1, real robot timing and real files.

The slow end-to-end tests, with the real program, are in test_attach_e2e.py.
"""

import dataclasses
import logging
import os
import subprocess
import sys
import threading
import time
import types

import numpy as np
import portpicker
import pytest
import reverb
from acme import specs
from acme.adders import reverb as reverb_adders

from agents.common.errors import UserError
from agents.mpo.builder import MPOBuilder
from agents.replay_pipeline import EXTERNAL_TABLE, REPLAY_TABLE
from environments.robot import RobotEnvironment
from environments.simulated_robot import SimulatedRobot
from environments.validation import StepValidator
from launch import experiment
from launch.config import ExperimentConfig
from launch.nodes.counter import PersistentCounter
from launch.nodes.gateway import GatewayWorker
from launch.nodes.learner import LearnerWorker
from launch.robot import attach
from launch.robot.link import LatestParameters, ParameterFetcher, ProgramLink, TokenRefused
from launch.robot.outbox import EpisodeOutbox
from launch.robot.sender import Sender
from launch.robot.spec import (
  SpecMismatchError,
  check_spec_matches,
  spec_differences,
  spec_from_data,
  spec_to_data,
)
from launch.robot.wire import EPISODE_KEY, episode_timesteps, episode_to_data
from launch.run_dir import RunDir
from launch.store.episodes import Episode, EpisodeStore
from tests.e2e_util import ROOT
from tests.fakes import TINY_AGENT as _TINY
from tests.fakes import random_episode

TINY_AGENT = dict(_TINY, replay=dict(_TINY['replay'], min_replay_size=50, n_step=3))


# ----------------------------------------------------------------------------
# A robot whose sensor fails: the e2e tests start it by name in an attach process.


class FaultySensorRobot(SimulatedRobot):
  """A simulated robot whose observation[2] reads NaN at step `nan_at_step` of every
  `every`-th episode (1: every episode)."""

  def __init__(self, nan_at_step: int, every: int = 1, **kwargs):
    super().__init__(**kwargs)
    self._nan_at_step = nan_at_step
    self._every = every
    self._episode = 0
    self._reads = 0

  def reset(self):
    self._episode += 1
    self._reads = 0
    return super().reset()

  def read(self):
    reading = super().read()
    self._reads += 1
    if self._episode % self._every == 0 and self._reads == self._nan_at_step:
      observation = np.array(reading.observation, copy=True)
      observation[2] = np.nan
      return reading._replace(observation=observation)
    return reading


def make_faulty_robot_env(
  nan_at_step: int = 5,
  every: int = 1,
  control_hz: float = 50.0,
  max_episode_steps: int = 20,
  seed: int = 0,
) -> RobotEnvironment:
  robot = FaultySensorRobot(
    nan_at_step, every, task='cartpole:swingup', control_hz=control_hz, seed=seed
  )
  return RobotEnvironment(robot, control_hz=control_hz, max_episode_steps=max_episode_steps)


# ----------------------------------------------------------------------------
# Fixtures: the program's servers in this process.


def _start_gateway(cfg, learner, replay_address, **kwargs):
  """The gateway node serving on 127.0.0.1 (a free port), in a thread, until `.stop` is set."""
  worker = GatewayWorker(cfg.to_dict(), learner, replay_address, 'localhost:0', **kwargs)
  stop = threading.Event()
  thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
  thread.start()
  assert worker.serving.wait(30), 'the gateway did not start'
  return types.SimpleNamespace(worker=worker, stop=stop, thread=thread, address=worker.address)


def _stop_gateway(gateway) -> None:
  gateway.stop.set()
  gateway.thread.join(timeout=30)


def _start_program(run_dir):
  """Replay (the builder's tables), a learner and the robot gateway, as the program has them."""
  cfg = ExperimentConfig.from_dict(
    dict(run_dir=str(run_dir), num_actors=1, learner_sample_timeout_s=0.5, agent=TINY_AGENT)
  )
  RunDir(run_dir).create()
  builder = experiment.make_builder(cfg)
  server = reverb.Server(builder.make_replay_tables(), port=None)
  client = reverb.Client(f'localhost:{server.port}')
  learner = LearnerWorker(cfg.to_dict(), client, PersistentCounter(str(run_dir)))
  replay_address = f'localhost:{server.port}'
  gateway = _start_gateway(cfg, learner, replay_address)
  return types.SimpleNamespace(
    cfg=cfg,
    builder=builder,
    server=server,
    client=client,
    learner=learner,
    gateway=gateway,
    gateway_address=gateway.address,
    token=RunDir(run_dir).gateway_token.read_text().strip(),
    replay_address=replay_address,
    run_dir=run_dir,
    store=RunDir(run_dir).store,
  )


def _stop_program(program) -> None:
  _stop_gateway(program.gateway)
  program.server.stop()


def _link(program, **kwargs) -> ProgramLink:
  return ProgramLink(program.token, gateway=program.gateway_address, **kwargs)


def _inserted(program) -> None:
  """Waits until the gateway has inserted what it stored into replay."""
  assert program.gateway.worker.inserter.flush(30), 'replay inserts did not finish'


@pytest.fixture(name='program', scope='module')
def _program(tmp_path_factory):
  program = _start_program(tmp_path_factory.mktemp('attach') / 'run')
  yield program
  _stop_program(program)


def _table_size(program, table: str) -> int:
  return int(program.client.server_info()[table].current_size)


def _stored(program, name: str):
  return [i for i in EpisodeStore(program.store).index() if i.writer == f'external_{name}']


def _episode(
  spec: specs.EnvironmentSpec, length: int, seed: int, reward: float = 0.5, **metadata
) -> Episode:
  return random_episode(
    np.random.default_rng(seed),
    length,
    obs_shape=spec.observations.shape,
    obs_dtype=spec.observations.dtype,
    action_shape=spec.actions.shape,
    action_dtype=spec.actions.dtype,
    reward=reward,
    reward_dtype=spec.rewards.dtype,
    discount_dtype=spec.discounts.dtype,
    metadata=dict(metadata, policy_version=[3, 4]),
  )


def _transitions(length: int, n_step: int) -> int:
  """Items acme's NStepTransitionAdder writes for an episode (see launch.store.sampling)."""
  return length - 1 + min(n_step, length)


# ----------------------------------------------------------------------------
# The spec comparison.


def _spec(obs_shape=(5,), obs_dtype=np.float32, obs_name='observations', maximum=1.0):
  return specs.EnvironmentSpec(
    observations=specs.Array(obs_shape, obs_dtype, name=obs_name),
    actions=specs.BoundedArray((1,), np.float32, -1.0, maximum, name='action'),
    rewards=specs.Array((), np.float32, name='reward'),
    discounts=specs.BoundedArray((), np.float32, 0.0, 1.0, name='discount'),
  )


def test_spec_round_trips_as_plain_data():
  spec = _spec()
  again = spec_from_data(spec_to_data(spec))
  assert spec_differences(spec_to_data(spec), spec_to_data(again)) == []
  assert again.actions == spec.actions and again.observations == spec.observations
  check_spec_matches(spec_to_data(spec), spec_to_data(again))  # No error.


def test_spec_mismatch_names_each_differing_field():
  program = spec_to_data(_spec())
  robot = spec_to_data(_spec(obs_shape=(3,), obs_dtype=np.float64, obs_name='joints', maximum=2.0))
  # Names are labels: not compared.
  assert spec_differences(program, robot) == [
    'observations.shape: program (5,), environment (3,)',
    "observations.dtype: program 'float32', environment 'float64'",
    'actions.maximum: program 1, environment 2',
  ]
  with pytest.raises(SpecMismatchError) as error:
    check_spec_matches(program, robot)
  message = str(error.value)
  assert message.startswith("the environment's spec does not match the program's in 3 field(s): ")
  assert 'observations.shape: program (5,), environment (3,)' in message
  # A nest where the program has one array; reward names are not compared.
  nested = _spec()._replace(
    observations={'joints': specs.Array((5,), np.float32)},
    rewards=specs.Array((), np.float32, name='r'),
  )
  assert spec_differences(program, spec_to_data(nested)) == [
    "observations: program one array, environment a dict with keys ['joints']"
  ]
  unbounded = _spec()._replace(actions=specs.Array((1,), np.float32, name='action'))
  assert spec_differences(program, spec_to_data(unbounded)) == [
    'actions.minimum: program -1, environment none',
    'actions.maximum: program 1, environment none',
  ]


def test_spec_mismatch_stops_attach_before_it_acts(program, tmp_path):
  # The simulated pendulum has 3 observations where the program's cartpole has 5.
  args = attach.parse_args(
    [
      '--gateway',
      program.gateway_address,
      '--token_file',
      str(RunDir(program.run_dir).gateway_token),
      '--env',
      'environments.simulated_robot:make_simulated_robot_env',
      '--env_arg',
      'task=pendulum:swingup',
      '--env_arg',
      'control_hz=50',
      '--buffer_dir',
      str(tmp_path / 'outbox'),
      '--name',
      'pendulum',
      '--connect_timeout_s',
      '20',
    ]
  )
  with pytest.raises(SpecMismatchError) as error:
    attach.attach(args)
  assert str(error.value).splitlines()[0] == (
    "the environment's spec does not match the program's in 1 "
    'field(s): observations.shape: program (5,), environment (3,)'
  )
  assert '  observations: float32 (5,), unbounded' in str(error.value).splitlines()
  assert not (tmp_path / 'outbox').exists()  # Nothing was run or buffered.


def test_attach_refuses_to_start_without_a_token_or_with_a_wrong_one(
  program, tmp_path, monkeypatch
):
  monkeypatch.delenv('COLLECT_INFER_GATEWAY_TOKEN', raising=False)
  argv = ['--gateway', program.gateway_address, '--env', 'no.such:factory', '--name', 'arm9']
  with pytest.raises(UserError) as error:
    attach.attach(attach.parse_args(argv))
  assert str(error.value).startswith(
    "no gateway token: the program's gateway takes robots with the run's token only"
  )
  (tmp_path / 'bad.token').write_text('x' * 43 + '\n')
  argv += ['--token_file', str(tmp_path / 'bad.token'), '--buffer_dir', str(tmp_path / 'out')]
  argv[3] = 'environments.simulated_robot:make_simulated_robot_env'
  with pytest.raises(TokenRefused, match='refused this robot: the gateway token is wrong'):
    attach.attach(attach.parse_args(argv + ['--connect_timeout_s', '20']))
  assert not (tmp_path / 'out').exists()  # Nothing was run or buffered.
  (tmp_path / 'bad.token').write_text('short\n')
  with pytest.raises(UserError, match='bad.token: not a gateway token'):
    attach.attach(attach.parse_args(argv))


def test_cli_reports_a_bad_factory_in_one_line(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.attach',
      '--gateway',
      'localhost:1',  # Never reached: the factory fails first.
      '--buffer_dir',
      str(tmp_path / 'outbox'),
      '--env',
      'environments.simulated_robot:no_such_factory',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, 'COLLECT_INFER_GATEWAY_TOKEN': 'x' * 43},
  )
  assert proc.returncode == 2, proc.stderr
  assert (
    "error: --env 'environments.simulated_robot:no_such_factory': "
    "environments.simulated_robot has no callable 'no_such_factory'" in proc.stderr.splitlines()
  ), proc.stderr


# ----------------------------------------------------------------------------
# Outbox and sender.


def test_outbox_and_sender_deliver_every_episode_exactly_once(program, tmp_path):
  spec, n_step = program.builder.spec, program.cfg.agent.replay.n_step
  outbox = EpisodeOutbox(tmp_path / 'outbox', 'arm1')
  lengths = [7, 1, 12]
  episodes = [_episode(spec, n, seed=n, source='arm1') for n in lengths]
  ids = [outbox.append(episode) for episode in episodes]
  assert outbox.pending() == ids
  before = _table_size(program, EXTERNAL_TABLE)
  link = _link(program, rpc_timeout_s=5.0)
  sender = Sender(outbox, link, 'arm1', max_backoff_s=1.0)
  sender.start()
  assert sender.flush(60), sender.last_error
  sender.halt()
  sender.join(timeout=10)
  assert outbox.pending() == []
  # Delivered episodes leave the robot's disk.
  assert outbox.counts() == {'buffered': 0, 'store': 3, 'rejected': 0, 'pending': 0}
  # The n-step transitions acme's adder makes, inserted by the gateway, into the external
  # table only.
  _inserted(program)
  assert _table_size(program, EXTERNAL_TABLE) - before == sum(
    _transitions(n, n_step) for n in lengths
  )
  assert _table_size(program, REPLAY_TABLE) == 0
  stored = _stored(program, 'arm1')
  assert [i.metadata[EPISODE_KEY] for i in stored] == [outbox.key(i) for i in ids]
  assert all(
    i.metadata['source'] == 'arm1' and i.metadata['policy_version'] == [3, 4] for i in stored
  )
  store = EpisodeStore(program.store)
  for info, episode in zip(stored, episodes):
    np.testing.assert_array_equal(store.read(info.episode_id).observations, episode.observations)
  outbox.close()

  # A restarted attach process sends nothing again...
  reopened = EpisodeOutbox(tmp_path / 'outbox', 'arm1')
  assert reopened.pending() == []
  # ...and an episode resent after a lost acknowledgement is recognised, not stored (nor
  # inserted into replay) twice.
  _, client, _ = link.connect()
  assert reopened.key(ids[0]) == outbox.key(ids[0])
  data = episode_to_data(episodes[0])
  data['metadata'][EPISODE_KEY] = reopened.key(ids[0])
  inserted = _table_size(program, EXTERNAL_TABLE)
  assert client.append_episode('arm1', data) == {
    'status': 'duplicate',
    'id': stored[0].episode_id,
  }
  assert len(_stored(program, 'arm1')) == 3
  _inserted(program)
  assert _table_size(program, EXTERNAL_TABLE) == inserted
  # The program checks what it receives, too.
  data['observations'] = data['observations'][:, :3]
  data['metadata'][EPISODE_KEY] = reopened.key('arm1-99999999')
  reply = client.append_episode('arm1', data)
  assert reply['status'] == 'rejected' and reply['reason'].startswith(
    f'arm1: episode {reopened.token}:arm1-99999999: observations: expected'
  )
  data = episode_to_data(episodes[0])
  data['observations'][2, 1] = np.nan
  data['metadata'][EPISODE_KEY] = reopened.key('arm1-99999998')
  reply = client.append_episode('arm1', data)
  assert reply == {
    'status': 'rejected',
    'reason': f'arm1: episode {reopened.token}:arm1-99999998: step 2: observations[1] = nan: '
    'not finite',
  }
  assert len(_stored(program, 'arm1')) == 3
  reopened.close()

  # A robot whose outbox was wiped numbers its episodes from 0 again: still new episodes.
  wiped = EpisodeOutbox(tmp_path / 'new_outbox', 'arm1')
  assert wiped.append(_episode(spec, 4, seed=4)) == ids[0] and wiped.token != outbox.token
  sender = Sender(wiped, link, 'arm1')
  sender.start()
  assert sender.flush(60), sender.last_error
  sender.halt()
  sender.join(timeout=10)
  assert [i.length for i in _stored(program, 'arm1')] == lengths + [4]
  wiped.close()


def test_sender_retries_until_the_address_book_names_a_live_program(program, tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  dead = f'localhost:{portpicker.pick_unused_port()}'
  run.write_addresses({'gateway': dead, 'started': 1.0})
  outbox = EpisodeOutbox(tmp_path / 'outbox', 'arm2')
  ids = [outbox.append(_episode(program.builder.spec, 5, seed=i)) for i in range(2)]
  link = ProgramLink(program.token, run_dir=str(run.path), rpc_timeout_s=2.0)
  sender = Sender(outbox, link, 'arm2', max_backoff_s=0.4, initial_backoff_s=0.1)
  sender.start()
  try:
    deadline = time.time() + 30
    while sender.failures < 3 and time.time() < deadline:
      time.sleep(0.1)
    assert sender.failures >= 3 and outbox.pending() == ids
    assert not sender.flush(0.5)
    # The program comes back (a relaunch publishes new ports): the sender finds it.
    run.write_addresses({'gateway': program.gateway_address, 'started': 2.0})
    assert sender.flush(30), sender.last_error
  finally:
    sender.halt()
    sender.join(timeout=10)
  assert [i.metadata[EPISODE_KEY] for i in _stored(program, 'arm2')] == [outbox.key(i) for i in ids]
  outbox.close()


# ----------------------------------------------------------------------------
# The control loop.


def _robot_loop(
  program,
  tmp_path,
  env,
  name,
  on_invalid='drop_episode',
  on_disconnect='hold',
  link=None,
  disconnect_after_s=5.0,
  stop=None,
):
  spec = specs.make_environment_spec(env)
  latest = LatestParameters()
  link = link or _link(program)
  fetcher = ParameterFetcher(
    link, latest, stop or threading.Event(), refresh_every_s=0.2, max_backoff_s=0.4
  )
  fetcher.fetch_once()
  builder = MPOBuilder(program.cfg.agent.with_overrides({'replay.variable_update_period': 1}), spec)
  actor = builder.make_actor(latest, None, version_name='learner_steps')
  outbox = EpisodeOutbox(tmp_path / name, name)
  sender = Sender(outbox, link, name, max_backoff_s=1.0)
  loop = attach.AttachedActor(
    env,
    actor,
    StepValidator(spec, on_error=on_invalid, name=name),
    outbox,
    sender,
    fetcher,
    name,
    {'task': 'test'},
    on_disconnect,
    disconnect_after_s,
  )
  return types.SimpleNamespace(
    loop=loop, outbox=outbox, sender=sender, fetcher=fetcher, latest=latest
  )


def test_nan_observation_drops_the_episode_before_it_leaves(program, tmp_path, caplog):
  env = make_faulty_robot_env(nan_at_step=5, max_episode_steps=20)
  robot = _robot_loop(program, tmp_path, env, 'nan1')
  try:
    with caplog.at_level(logging.ERROR, logger='collect_infer.validation'):
      robot.loop.run_episode(threading.Event())
  finally:
    env.close()
  errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
  assert errors == ['nan1: Invalid step 5, observation[2] = nan: not finite; dropping the episode']
  assert robot.loop.counts.last_invalid == 'step 5: observation[2] = nan: not finite'
  assert robot.loop.counts.dropped_invalid == 1 and robot.loop.counts.buffered == 0
  assert robot.outbox.pending() == []
  robot.outbox.close()


def test_nan_observation_truncates_the_episode_when_asked(program, tmp_path):
  env = make_faulty_robot_env(nan_at_step=5, max_episode_steps=20)
  robot = _robot_loop(program, tmp_path, env, 'nan2', on_invalid='truncate')
  try:
    robot.loop.run_episode(threading.Event())
  finally:
    env.close()
  [episode_id] = robot.outbox.pending()
  episode = robot.outbox.read(episode_id)
  # Steps 0-4 are kept, the last of them now ending the episode.
  assert episode.length == 4 and np.all(np.isfinite(episode.observations))
  assert episode.metadata['invalid_step'] == 'step 5: observation[2] = nan: not finite'
  assert episode.metadata['source'] == 'nan2' and episode.metadata['policy_version'] == [0, 0]
  robot.sender.start()
  assert robot.sender.flush(30), robot.sender.last_error
  robot.sender.halt()
  [stored] = _stored(program, 'nan2')
  assert stored.length == 4 and stored.metadata['invalid_step'].startswith('step 5')
  robot.outbox.close()


def test_stop_mode_parks_the_robot_while_the_program_is_away(program, tmp_path):
  """--on_disconnect stop: the episode ends at the first step without a reachable
  program, the watchdog holds the robot with its safe action, and the next episode
  starts only once parameters flow again (from a relaunched gateway, at a new port)."""
  run = RunDir(tmp_path / 'run')
  run.create()
  gateway = _start_gateway(program.cfg, program.learner, program.replay_address)
  run.write_addresses({'gateway': gateway.address})
  link = ProgramLink(program.token, run_dir=str(run.path), rpc_timeout_s=2.0)
  env = RobotEnvironment(
    SimulatedRobot('cartpole:swingup', control_hz=50.0), control_hz=50.0, max_episode_steps=10_000
  )
  stop = threading.Event()
  robot = _robot_loop(
    program,
    tmp_path,
    env,
    'stopper',
    on_disconnect='stop',
    link=link,
    disconnect_after_s=1.0,
    stop=stop,
  )
  robot.fetcher.start()
  episode = threading.Thread(target=robot.loop.run_episode, args=(stop,))
  try:
    episode.start()
    time.sleep(1.5)
    _stop_gateway(gateway)  # The program goes away mid-episode.
    gone = time.monotonic()
    episode.join(timeout=10)
    assert not episode.is_alive(), 'the episode did not end without the program'
    ended = time.monotonic()
    assert robot.loop.counts.abandoned == 1 and robot.outbox.pending() == []
    assert ended - gone < 1.0 + 2.0 + 1.0  # disconnect_after_s, one failing fetch, slack.
    # Nothing but safe actions while the robot waits.
    time.sleep(0.5)
    waiting = threading.Thread(target=robot.loop.run_episode, args=(stop,))
    waiting.start()
    time.sleep(1.0)
    assert robot.loop.counts.waiting_for_program and robot.loop.counts.steps > 0
    steps_before = robot.loop.counts.steps
    commands = [c for c in env.robot.sent_commands() if c.time > ended]
    assert len(commands) > 20 and all(c.action.tolist() == [0.0] for c in commands)
    # The program is back at a new address: a new episode starts.
    gateway = _start_gateway(program.cfg, program.learner, program.replay_address)
    run.write_addresses({'gateway': gateway.address})
    deadline = time.time() + 20
    while robot.loop.counts.steps <= steps_before + 10 and time.time() < deadline:
      time.sleep(0.1)
    assert robot.loop.counts.steps > steps_before + 10 and not robot.loop.counts.waiting_for_program
  finally:
    stop.set()
    for thread in (episode, locals().get('waiting')):
      if thread is not None:
        thread.join(timeout=10)
    env.close()
    _stop_gateway(gateway)
    robot.outbox.close()


# ----------------------------------------------------------------------------
# The learner's batches.


def test_learner_mixes_in_the_external_table_once_it_holds_data(tmp_path):
  program = _start_program(tmp_path / 'run')
  try:
    cfg, builder = program.cfg, program.builder
    batch = cfg.agent.replay.batch_size
    external_batch = int(round(batch * cfg.external_ratio))
    assert external_batch == 4
    # Main-table data the program's actors would insert: rewards 0.5.
    adder = builder.make_adder(program.client)
    for seed in range(4):
      first, *rest = _adder_steps(_episode(builder.spec, 20, seed, reward=0.5))
      adder.add_first(first)
      for action, timestep in rest:
        adder.add(action, timestep)
    iterator = program.learner._new_iterator()
    big = lambda b: int(np.sum(b.reward > 5.0))  # Only robot transitions reach 7 and more.
    first = next(iterator)
    assert first.observation.shape == (batch, 5) and big(first) == 0
    # A robot's episodes (rewards 7) arrive in the external table.
    outbox = EpisodeOutbox(tmp_path / 'outbox', 'arm3')
    for seed in range(2):
      outbox.append(_episode(builder.spec, 10, seed, reward=7.0))
    sender = Sender(outbox, _link(program), 'arm3')
    sender.start()
    assert sender.flush(30), sender.last_error
    sender.halt()
    _inserted(program)
    deadline = time.time() + 30
    batches = []
    while time.time() < deadline and (not batches or big(batches[-1]) == 0):
      batches.append(next(iterator))
    # From then on, exactly the external share of every batch, shapes unchanged.
    for _ in range(5):
      batch_data = next(iterator)
      assert batch_data.observation.shape == (batch, 5)
      assert big(batch_data) == external_batch
    outbox.close()
  finally:
    _stop_program(program)


def _adder_steps(episode: Episode):
  first, rest = episode_timesteps(episode)
  return [first] + rest


def test_external_table_never_holds_an_insert():
  """The external table's rate limiter: inserts go through with no sampler at all."""
  builder = MPOBuilder(
    ExperimentConfig.from_dict(dict(agent={**TINY_AGENT, 'replay.min_replay_size': 10_000})).agent,
    _spec(),
  )
  server = reverb.Server(builder.make_replay_tables(), port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    info = client.server_info()
    # No insert-side limit (the main table's samples-per-insert limiter has one).
    assert info[EXTERNAL_TABLE].rate_limiter_info.max_diff >= sys.float_info.max
    assert info[EXTERNAL_TABLE].signature == reverb_adders.NStepTransitionAdder.signature(
      builder.spec
    )
    adder = builder.make_external_adder(client)
    start = time.monotonic()
    for seed in range(30):
      first, *rest = _adder_steps(_episode(builder.spec, 50, seed))
      adder.add_first(first)
      for action, timestep in rest:
        adder.add(action, timestep)
    assert client.server_info()[EXTERNAL_TABLE].current_size == 30 * _transitions(50, 3)
    assert time.monotonic() - start < 30
  finally:
    server.stop()


# ----------------------------------------------------------------------------
# The address book other machines read.


def test_address_book_announces_the_configured_host(tmp_path, monkeypatch):
  import launchpad as lp
  from launchpad.address import SimpleLocalAddressBuilder

  from agents.common.errors import ConfigError
  from launch.local import launcher

  monkeypatch.delenv(launcher.ANNOUNCE_HOST_ENV, raising=False)
  config = ExperimentConfig.from_dict(dict(run_dir=str(tmp_path / 'run')))
  assert launcher.announce_host(config) == 'localhost'
  monkeypatch.setenv(launcher.ANNOUNCE_HOST_ENV, 'trainer.lab')
  assert launcher.announce_host(config) == 'trainer.lab'
  configured = dataclasses.replace(config, announce_host='10.1.2.3')
  assert launcher.announce_host(configured) == '10.1.2.3'  # The config wins.
  monkeypatch.setenv(launcher.ANNOUNCE_HOST_ENV, 'bad host')
  with pytest.raises(ConfigError, match='COLLECT_INFER_HOST'):
    launcher.announce_host(config)
  with pytest.raises(ConfigError, match='announce_host'):
    ExperimentConfig.from_dict(dict(announce_host='a b'))
  with pytest.raises(ConfigError, match='external_ratio'):
    ExperimentConfig.from_dict(dict(external_ratio=1.5))
  with pytest.raises(ConfigError, match='gateway_port'):
    ExperimentConfig.from_dict(dict(gateway_port=70_000))

  address = lp.Address()
  address.bind(SimpleLocalAddressBuilder())
  port = address.resolve().rsplit(':', 1)[1]
  run = RunDir(tmp_path / 'run')
  run.create()
  book = launcher.write_address_book(
    run, {'learner': address, 'gateway': 'localhost:4321'}, host='10.1.2.3'
  )
  assert book['learner'] == f'10.1.2.3:{port}' and book['gateway'] == '10.1.2.3:4321'
  assert run.read_addresses()['learner'] == f'10.1.2.3:{port}'
  assert (run.path / 'addresses.json').stat().st_mode & 0o777 == 0o600
