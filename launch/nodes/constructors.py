"""The program's node constructors, each importing its node's module only when called.

`launch.program` wires nodes from these, so building a program (in the launcher) imports
neither TensorFlow, Reverb, JAX nor dm_control: only the node processes do, when they
construct their worker. With a fork server that has imported them already (see
launch.local.forkserver), a launch then costs the launcher about 2 s of CPU instead of 12.
Launchpad pickles a constructor by reference, so each is a module-level function.
"""

from typing import Any


def learner(*args: Any, **kwargs: Any):
  from launch.nodes.learner import LearnerWorker

  return LearnerWorker(*args, **kwargs)


def actor(*args: Any, **kwargs: Any):
  from launch.nodes.actor import ActorWorker

  return ActorWorker(*args, **kwargs)


def batched_actor(*args: Any, **kwargs: Any):
  from launch.nodes.batched_actor import BatchedActorWorker

  return BatchedActorWorker(*args, **kwargs)


def evaluator(*args: Any, **kwargs: Any):
  from launch.nodes.evaluator import EvaluatorWorker

  return EvaluatorWorker(*args, **kwargs)


def counter(*args: Any, **kwargs: Any):
  from launch.nodes.counter import PersistentCounter

  return PersistentCounter(*args, **kwargs)


def gateway(*args: Any, **kwargs: Any):
  from launch.nodes.gateway import GatewayWorker

  return GatewayWorker(*args, **kwargs)
