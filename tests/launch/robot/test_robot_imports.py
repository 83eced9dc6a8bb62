"""A robot builds and runs its actor without Reverb or TensorFlow.

`launch.attach` builds the program's actor through the agent's builder; the builders import
Reverb (and so TensorFlow) only in the methods that make tables, adders and datasets. A
robot PC then imports in about 2 s instead of about 7 here, and needs neither library.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

# What attach does once it has the program's spec and parameters, for each algorithm named.
ROBOT = textwrap.dedent(
  """
  import sys

  import numpy as np
  from acme import specs
  from acme.utils import loggers

  from agents import registry
  from environments.suite import make_environment
  from launch.robot import attach  # noqa: F401  (the robot's entry point and its imports)
  from launch.robot.link import LatestParameters

  env = make_environment('cartpole:swingup', seed=0)
  spec = specs.make_environment_spec(env)
  obs = env.reset().observation
  for name in sys.argv[1:]:
    entry = registry.get(name)
    builder = entry.make_builder(entry.config_class(), spec)
    # The parameters a robot would fetch from the learner.
    learner = builder.make_learner(iter(()), seed=0, logger=loggers.NoOpLogger())
    latest = LatestParameters()
    latest.set(learner.get_variables(['policy'])[0], 0)
    actor = builder.make_actor(latest, adder=None, seed=0, version_name='learner_steps')
    action = np.asarray(actor.select_action(obs))
    assert action.shape == (1,) and np.all(np.isfinite(action)), (name, action)
  print('LOADED', sorted(m for m in ('tensorflow', 'reverb') if m in sys.modules))
  """
)


def test_a_robot_acts_without_importing_reverb_or_tensorflow():
  done = subprocess.run(
    [sys.executable, '-c', ROBOT, 'mpo', 'bc', 'gato'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'},
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'LOADED []' in done.stdout, done.stdout[-2000:]
