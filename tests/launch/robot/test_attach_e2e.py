"""End-to-end: robots attach to the real program (local_mp) from separate processes.

Each test launches the program as a user would, then `python -m launch.attach` with a
simulated robot (real time, real watchdog), which talks to the program's gateway only, and
looks at what reached the program's replay and store. Timing bounds allow for a loaded
2-core machine.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from typing import Optional

import numpy as np
import pytest
import reverb
import tree

from agents import packed_items
from agents.replay_pipeline import EXTERNAL_TABLE
from launch.robot.wire import EPISODE_KEY
from launch.store.episodes import EpisodeStore
from tests.e2e_util import (
  ROOT,
  kill_session,
  output,
  session_processes,
  start_cli,
  wait_exit,
  wait_for,
)
from tests.fakes import TINY

pytestmark = pytest.mark.slow

HZ = 50  # 0.8 s episodes: the tests wait on real time.
TIMED_HZ = 20  # Where the control loop's timing is checked: a period a loaded machine keeps.
EPISODE_STEPS = 40
SIM_ROBOT = 'environments.simulated_robot:make_simulated_robot_env'


def start_attach(
  tmp_path: pathlib.Path,
  run_dir: pathlib.Path,
  name: str,
  *args: str,
  env: str = SIM_ROBOT,
  hz: int = HZ,
) -> subprocess.Popen:
  """`python -m launch.attach` for a robot `name`, in its own session, quick to retry."""
  log = tmp_path / f'attach-{name}-{time.time_ns()}.log'
  out = open(log, 'w')
  proc = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'launch.attach',
      '--run_dir',
      str(run_dir),
      '--env',
      env,
      '--env_arg',
      f'control_hz={hz}',
      '--env_arg',
      f'max_episode_steps={EPISODE_STEPS}',
      '--name',
      name,
      '--buffer_dir',
      str(tmp_path / f'outbox-{name}'),
      '--refresh_every_s',
      '0.5',
      '--max_backoff_s',
      '2',
      '--disconnect_after_s',
      '3',
      '--status_every_s',
      '0.5',
      '--connect_timeout_s',
      '240',
      *args,
    ],
    cwd=ROOT,
    stdout=out,
    stderr=subprocess.STDOUT,
    start_new_session=True,
  )
  proc.log_path = log
  return proc


def status(tmp_path: pathlib.Path, name: str) -> Optional[dict]:
  try:
    return json.loads((tmp_path / f'outbox-{name}' / 'status.json').read_text())
  except (OSError, ValueError):
    return None


def stored(run_dir: pathlib.Path, name: str):
  store = run_dir / 'store'
  if not store.exists():
    return []
  return [i for i in EpisodeStore(store, verify=False).index() if i.writer == f'external_{name}']


def wait_for_addresses(run_dir: pathlib.Path, program: subprocess.Popen) -> dict:
  wait_for((run_dir / 'addresses.json').exists, 240, 'the address book', program)
  return json.loads((run_dir / 'addresses.json').read_text())


def external_samples(book: dict, program: subprocess.Popen, at_least: int, count: int) -> list:
  """`count` samples of the external table once the gateway has inserted `at_least` items
  (its first insert waits for it to load Reverb: seconds, on a busy machine more)."""
  client = reverb.Client(book['replay'])
  wait_for(
    lambda: client.server_info(timeout=10)[EXTERNAL_TABLE].current_size >= at_least,
    240,
    'the gateway to insert the robot episodes into the external table',
    program,
  )
  return list(client.sample(EXTERNAL_TABLE, num_samples=count, emit_timesteps=False))


def wait_for_the_learner_to_sample_robots(program: subprocess.Popen) -> None:
  wait_for(
    lambda: 'of each batch come from attached robots now' in output(program),
    120,
    'the learner to sample the external table',
    program,
  )


def stop_attach(proc: subprocess.Popen, timeout: float = 90) -> str:
  os.killpg(proc.pid, signal.SIGINT)
  rc = wait_exit(proc, timeout)
  text = output(proc)
  assert rc == 0, text[-5000:]
  return text


def test_robot_attaches_streams_tagged_episodes_and_follows_the_policy(tmp_path, monkeypatch):
  run_dir = tmp_path / 'run'
  # The address book names the host robots reach the program at; the gateway listens there.
  monkeypatch.setenv('COLLECT_INFER_HOST', '127.0.0.1')
  program = start_cli(run_dir, '--max_actor_steps', '10000000', '--num_actors', '1', *TINY)
  procs = [program]
  try:
    book = wait_for_addresses(run_dir, program)
    assert (run_dir / 'addresses.json').stat().st_mode & 0o777 == 0o600
    assert book['gateway'].startswith('127.0.0.1:') and book['replay'].startswith('127.0.0.1:')
    token = run_dir / 'gateway.token'
    assert token.stat().st_mode & 0o777 == 0o600
    # Every other episode of this robot has a NaN in its sensor reading at step 5. Its
    # operator was handed a copy of the token.
    (tmp_path / 'arm.token').write_bytes(token.read_bytes())
    os.chmod(tmp_path / 'arm.token', 0o600)
    robot = start_attach(
      tmp_path,
      run_dir,
      'arm',
      '--env_arg',
      'nan_at_step=5',
      '--env_arg',
      'every=2',
      '--token_file',
      str(tmp_path / 'arm.token'),
      env='tests.launch.robot.test_attach:make_faulty_robot_env',
    )
    # A pendulum is no cartpole: refused before it acts.
    wrong = start_attach(
      tmp_path,
      run_dir,
      'pendulum',
      '--env_arg',
      'task=pendulum:swingup',
      '--env_arg',
      'control_hz=25',
    )  # Pendulum steps every 20 ms.
    procs += [robot, wrong]
    assert wait_exit(wrong, timeout=240) == 2, output(wrong)[-3000:]
    assert (
      "error: the environment's spec does not match the program's in 1 field(s): "
      'observations.shape: program (5,), environment (3,)' in output(wrong).splitlines()
    ), output(wrong)[-3000:]
    assert not stored(run_dir, 'pendulum')

    def enough():
      s = status(tmp_path, 'arm')
      return (
        len(stored(run_dir, 'arm')) >= 4 and s is not None and len(s['parameters']['versions']) >= 3
      )

    wait_for(enough, 240, 'four episodes of the robot in the store and fresh parameters', robot)
    text = stop_attach(robot)
    final = status(tmp_path, 'arm')
    context = f'status {json.dumps(final)}\nattach output:\n{text[-3000:]}'

    # The NaN episodes were dropped on the robot PC, with the documented error.
    assert final['episodes']['dropped_invalid'] >= 2, context
    assert re.search(
      r'\[validation\] error: arm: Invalid step 5, observation\[2\] = '
      r'nan: not finite; dropping the episode',
      text,
    ), text[-3000:]
    assert (
      '[attach] arm: invalid step, episode dropped: step 5: observation[2] = nan: not finite'
      in text
    )
    # Every clean episode reached the store whole, tagged, exactly once.
    episodes = stored(run_dir, 'arm')
    assert final['delivery']['pending'] == 0 and final['delivery']['rejected'] == 0, context
    assert len(episodes) == final['episodes']['buffered'] == final['delivery']['store'], context
    ids = [e.metadata[EPISODE_KEY] for e in episodes]
    assert len(set(ids)) == len(ids)
    for info in episodes:
      assert info.length == EPISODE_STEPS, (info, context)
      assert info.metadata['source'] == 'arm' and info.metadata['task'] == 'cartpole:swingup'
      low, high = info.metadata['policy_version']
      assert 0 <= low <= high, info
    store = EpisodeStore(run_dir / 'store')
    assert all(np.isfinite(store.read(e.episode_id).observations).all() for e in episodes)
    # Parameters refreshed while it ran: later episodes acted with newer policies.
    versions = final['parameters']['versions']
    assert versions == sorted(versions) and len(versions) >= 3, context
    used = [e.metadata['policy_version'] for e in episodes]
    assert used[-1][1] > used[0][0], (used, context)

    # The gateway inserted its transitions into the external table (the robot has no Reverb
    # client): finite, and the learner mixes them in.
    assert 'replay' not in final['delivery'], final['delivery']
    items = len(episodes) * EPISODE_STEPS  # n-step transitions: at least one a step.
    samples = external_samples(book, program, items, 64)
    fields = [np.asarray(x) for sample in samples for x in tree.flatten(sample.data)]
    assert len(samples) == 64 and all(np.isfinite(x).all() for x in fields)
    wait_for_the_learner_to_sample_robots(program)
  finally:
    for proc in procs:
      kill_session(proc)


def test_learner_killed_and_relaunched_while_the_robot_runs(tmp_path):
  run_dir = tmp_path / 'run'
  program = start_cli(run_dir, '--max_actor_steps', '10000000', '--num_actors', '1', *TINY)
  procs = [program]
  try:
    book = wait_for_addresses(run_dir, program)
    robot = start_attach(tmp_path, run_dir, 'arm', '--on_disconnect', 'hold', hz=TIMED_HZ)
    procs.append(robot)
    wait_for(
      lambda: len(stored(run_dir, 'arm')) >= 2, 240, 'two robot episodes in the store', robot
    )
    # The gateway inserts stored episodes into replay after answering the robot (its first
    # insert loads Reverb); a stop drops what is still queued (the store has it all).
    client = reverb.Client(book['replay'])
    wait_for(
      lambda: client.server_info(timeout=10)[EXTERNAL_TABLE].current_size > 0,
      240,
      'robot transitions in the external table',
      program,
    )
    found = re.search(r'\[learner\] running as pid (\d+)', output(program))
    assert found, output(program)[-3000:]
    learner = int(found.group(1))
    assert learner in session_processes(program.pid)  # A node of this program, nothing else.
    os.kill(learner, signal.SIGKILL)
    killed = time.time()
    # In local_mp a dead node ends the program; the others save their state.
    assert wait_exit(program, timeout=120) == 1, output(program)[-3000:]
    assert 'a node failed' in output(program)
    at_kill = status(tmp_path, 'arm')['episodes']['buffered']
    # The robot keeps running episodes while the program is away (--on_disconnect hold).
    wait_for(
      lambda: status(tmp_path, 'arm')['episodes']['buffered'] >= at_kill + 2,
      60,
      'the robot to finish episodes without the program',
      robot,
    )
    away = status(tmp_path, 'arm')
    assert not away['connected'] and away['delivery']['pending'] >= 2, away

    relaunched = start_cli(run_dir)
    procs.append(relaunched)

    def caught_up():
      s = status(tmp_path, 'arm')
      return s['connected'] and s['delivery']['pending'] == 0 and s['program']['started'] > killed

    wait_for(caught_up, 240, 'the robot to reconnect and send its buffered episodes', relaunched)
    text = output(relaunched)
    restored = re.search(r"restored table sizes \{[^}]*'%s': (\d+)" % EXTERNAL_TABLE, text)
    assert restored and int(restored.group(1)) > 0, 'robot transitions were not kept in replay'
    robot_text = stop_attach(robot)
    final = status(tmp_path, 'arm')

    # No completed episode was lost or stored twice.
    episodes = stored(run_dir, 'arm')
    ids = [e.metadata[EPISODE_KEY] for e in episodes]
    assert len(ids) == len(set(ids)) == final['episodes']['buffered'] >= at_kill + 2, final
    assert final['delivery']['pending'] == 0
    assert 'learner answers again' in robot_text
    # The control loop never waited on the network: at most a few starved periods
    # (a loaded machine), each covered by the watchdog, and no stall of seconds.
    timing = final['timing']
    assert timing['steps'] >= (final['episodes']['buffered']) * EPISODE_STEPS
    assert timing['deadline_misses'] <= 0.05 * timing['steps'], timing
    assert timing['jitter_max_s'] < 2.0, timing

  finally:
    for proc in procs:
      kill_session(proc)


def robot_episodes(tmp_path, run_dir, procs: list, name: str, **attach) -> str:
  """Attaches robot `name` (start_attach's `env` and flags in `attach`), waits until two of
  its episodes are stored, stops it cleanly; returns its output."""
  robot = start_attach(tmp_path, run_dir, name, **attach)
  procs.append(robot)
  wait_for(lambda: len(stored(run_dir, name)) >= 2, 240, f'two episodes of {name} stored', robot)
  return stop_attach(robot)


def test_a_robot_acts_for_a_program_of_several_bodies(tmp_path, monkeypatch):
  """A program over cartpole and point_mass learns in one placed layout of both bodies; a
  cartpole robot acts through it, stores its own arrays, and its replay items are placed."""
  run_dir = tmp_path / 'run'
  monkeypatch.setenv('COLLECT_INFER_HOST', '127.0.0.1')
  program = start_cli(
    run_dir,
    *('--tasks', 'cartpole:swingup,point_mass:easy', '--num_actors', '2'),
    *('--max_actor_steps', '10000000', *TINY),
  )
  procs = [program]
  try:
    book = wait_for_addresses(run_dir, program)
    text = robot_episodes(tmp_path, run_dir, procs, 'arm')  # A simulated cartpole.
    assert '[attach] arm: attached to cartpole:swingup' in text, text[-3000:]
    # The store keeps the robot's own arrays (cartpole's 5 observations, 1 action).
    store = EpisodeStore(run_dir / 'store')
    for info in stored(run_dir, 'arm'):
      episode = store.read(info.episode_id)
      assert episode.metadata['task'] == 'cartpole:swingup'
      assert episode.observations.shape == (EPISODE_STEPS + 1, 5), episode.observations.shape
      assert episode.actions.shape == (EPISODE_STEPS, 1)
    # Replay holds them placed: cartpole's slot (0:5), point_mass's zeros (5:9), the task's
    # one-hot (9:11); actions in dimension 0 of 3, point_mass's two zero.
    replay_config = json.loads((run_dir / 'config.json').read_text())['agent']['replay']
    assert replay_config['packed_items']  # The cpu preset's: an item is one float32 row.
    for sample in external_samples(book, program, EPISODE_STEPS, 16):
      # The n-step transition: observation, action, reward, discount, next observation.
      (row,) = sample.data
      observation, action = (x[0] for x in packed_items.unpack(np.asarray(row)[None], 11, 3)[:2])
      assert observation.shape == (11,) and action.shape == (3,), (observation, action)
      np.testing.assert_array_equal(observation[5:], [0, 0, 0, 0, 1, 0])
      np.testing.assert_array_equal(action[1:], [0, 0])
      assert np.isfinite(observation).all() and np.abs(action[0]) <= 1
    wait_for_the_learner_to_sample_robots(program)
  finally:
    for proc in procs:
      kill_session(proc)


def make_camera_robot_env(seed: int = 7, **unused):
  """A robot with a camera: cartpole:swingup as the pixel program below sees it (16x16
  images, 2 frames stacked, 20 control steps an action, the state features beside)."""
  del unused  # control_hz, max_episode_steps: its episodes are 50 actions long already.
  from launch import experiment
  from launch.config import ExperimentConfig

  config = ExperimentConfig(
    pixels=True, pixel_size=16, frame_stack=2, action_repeat=20, pixel_features=True
  )
  return experiment.make_env(config, seed=seed)


def test_a_camera_robot_streams_images_and_features_into_a_pixel_program(tmp_path, monkeypatch):
  from tests.launch.test_pixels_e2e import PIXELS

  run_dir = tmp_path / 'run'
  monkeypatch.setenv('COLLECT_INFER_HOST', '127.0.0.1')
  program = start_cli(
    run_dir,
    *(*PIXELS, '--pixel_features', '--max_actor_steps', '10000000'),
    *('--eval_every_seconds', '600', '--no_eval_gifs'),
  )
  procs = [program]
  try:
    book = wait_for_addresses(run_dir, program)
    camera = 'tests.launch.robot.test_attach_e2e:make_camera_robot_env'
    robot_episodes(tmp_path, run_dir, procs, 'cam', env=camera)
    # The store holds the robot's images as uint8 with its state features row for row.
    store = EpisodeStore(run_dir / 'store')
    for info in stored(run_dir, 'cam'):
      episode = store.read(info.episode_id)
      assert episode.observations.dtype == np.uint8
      assert episode.observations.shape == (51, 16, 16, 6), episode.observations.shape
      assert episode.observation_features.shape == (51, 5)
      assert np.ptp(episode.observations) > 0  # Not a blank camera.
      assert info.size < episode.observations.nbytes  # Compressed.
    # The gateway inserted its transitions: images and features, the learner samples them.
    (sample,) = external_samples(book, program, 50, 1)
    arrays = [np.asarray(x) for x in sample.data]
    assert any(a.dtype == np.uint8 and a.shape == (16, 16, 6) for a in arrays), [
      (a.dtype, a.shape) for a in arrays
    ]
    assert any(a.dtype == np.float32 and a.shape == (5,) for a in arrays)
    wait_for_the_learner_to_sample_robots(program)
  finally:
    for proc in procs:
      kill_session(proc)
