"""The topology: one experiment config -> one Launchpad program.

Building it imports none of the nodes' libraries (launch.nodes.constructors).
"""

import os
from typing import Any, Dict, Tuple

import launchpad as lp

from launch import experiment
from launch.config import ExperimentConfig
from launch.nodes import constructors
from launch.nodes.replay_node import CheckpointedReverbNode


def _make_tables(config_dict: Dict[str, Any]):
  return experiment.make_builder(experiment.config_from_dict(config_dict)).make_replay_tables()


def make_program(
  config: ExperimentConfig, gateway: str = 'localhost:0'
) -> Tuple[lp.Program, Dict[str, Any]]:
  """Replay, counter, learner, the robot gateway, N actors and the evaluator, wired together.

  `gateway` is the 'host:port' the robot gateway listens on (the announced host; see
  launch.nodes.gateway). Also returns the servers' Launchpad addresses; they resolve to
  'host:port' once the program is launched (see `launch.local.launcher`).
  """
  cfg = config.to_dict()
  run_dir = os.path.abspath(config.run_dir)
  cfg['run_dir'] = run_dir
  program = lp.Program(name='collect_infer')

  replay_node = CheckpointedReverbNode(
    lambda: _make_tables(cfg), replay_dir=os.path.join(run_dir, 'replay')
  )
  counter_node = lp.CourierNode(constructors.counter, run_dir)
  with program.group('replay'):
    replay = program.add_node(replay_node)
  with program.group('counter'):
    counter = program.add_node(counter_node)
  with program.group('learner'):
    learner_node = lp.CourierNode(constructors.learner, cfg, replay, counter)
    learner = program.add_node(learner_node)
  with program.group('gateway'):
    # A plain node: it serves robots over its own gRPC port, and nothing over Courier.
    program.add_node(
      lp.PyClassNode(constructors.gateway, cfg, learner, replay_node.reverb_address, gateway)
    )
  if config.mode != 'offline':  # Offline training has no actors, only stored data.
    with program.group('actor'):
      worker = constructors.batched_actor if config.envs_per_actor > 1 else constructors.actor
      for i in range(config.num_actors):
        program.add_node(lp.CourierNode(worker, cfg, i, replay, learner, counter))
  with program.group('evaluator'):
    program.add_node(lp.CourierNode(constructors.evaluator, cfg, learner, counter, replay))
  addresses = {
    'replay': replay_node.reverb_address,
    'learner': learner_node.courier_address,
    'counter': counter_node.courier_address,
  }
  return program, addresses
