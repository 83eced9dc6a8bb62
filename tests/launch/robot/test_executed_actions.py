"""One meaning for a stored `action`: the executed (clipped) one, from actors and robots alike.

A real Reverb server, learner and gateway (as in test_attach), a real actor node on
cartpole, a real simulated robot, and the real store: both sources' episodes must pass
the gateway's own arrival check.
"""

import threading

import numpy as np
import pytest
from acme import specs

from environments.actions import ExecutedActionActor, clip_action
from environments.simulated_robot import make_simulated_robot_env
from launch.nodes.actor import ActorWorker
from launch.nodes.counter import PersistentCounter
from launch.robot.wire import check_episode
from launch.store.episodes import EpisodeStore
from tests.launch.robot.test_attach import _robot_loop, _start_program, _stop_program


@pytest.fixture(name='program', scope='module')
def _program(tmp_path_factory):
  program = _start_program(tmp_path_factory.mktemp('executed') / 'run')
  yield program
  _stop_program(program)


def test_clip_action_keeps_dtype_and_nan():
  spec = specs.BoundedArray((2,), np.float32, -1.0, 1.0)
  clipped = clip_action(np.array([-3.3, 2.9], np.float32), spec)
  assert clipped.dtype == np.float32 and clipped.tolist() == [-1.0, 1.0]
  assert np.isnan(clip_action(np.array([np.nan, 0.0], np.float32), spec)[0])
  unbounded = specs.Array((2,), np.float32)
  assert clip_action(np.array([5.0, 0.0], np.float32), unbounded).tolist() == [5.0, 0.0]


def test_actor_and_robot_episodes_store_the_executed_action_and_pass_one_check(program, tmp_path):
  spec = program.builder.spec
  # The program's actor node: its stochastic policy samples past [-1, 1] in 1000 steps.
  worker = ActorWorker(
    program.cfg.to_dict(), 0, program.client, program.learner, PersistentCounter(str(tmp_path))
  )
  assert isinstance(worker._stoppable._actor, ExecutedActionActor)
  worker._loop.run_episode()
  # An attached (simulated) robot through the gateway.
  env = make_simulated_robot_env(control_hz=100.0, max_episode_steps=30)
  robot = _robot_loop(program, tmp_path, env, 'arm_clip')
  try:
    robot.loop.run_episode(threading.Event())
  finally:
    env.close()
  robot.sender.start()
  assert robot.sender.flush(30), robot.sender.last_error
  robot.sender.halt()
  robot.outbox.close()

  store = EpisodeStore(program.store)
  infos = {info.writer: info for info in store.index()}
  assert {'actor_0', 'external_arm_clip'} <= set(infos)
  for writer in ('actor_0', 'external_arm_clip'):
    episode = store.read(infos[writer].episode_id)
    # The arrival check the gateway makes of every robot episode.
    assert check_episode(episode, spec) is None, writer
    assert np.all(np.abs(episode.actions) <= 1.0), writer
  # The actor's policy did sample past the bounds: the clip is what made it pass.
  actor_actions = store.read(infos['actor_0'].episode_id).actions
  assert np.any(np.abs(actor_actions) == 1.0)
