"""Fixtures shared by the experiment tools' tests."""

import pytest

from launch import experiment
from launch.checkpointing import Checkpointer
from launch.config import ExperimentConfig
from launch.run_dir import RunDir
from tests.fakes import TINY_AGENT


def make_run(path, task: str, checkpoints=(), **overrides) -> ExperimentConfig:
  """A run directory of `task` by the tiny MPO agent (or as `overrides` of the config say:
  another algorithm, agent or tasks), with a checkpoint at each (step, seed) of
  `checkpoints` (a learner's initial state from that seed)."""
  cfg = ExperimentConfig.from_dict(
    {'run_dir': str(path), 'task': task, 'agent': TINY_AGENT, **overrides}
  )
  rd = RunDir(str(path))
  rd.create()
  rd.write_config(cfg.to_dict())
  if checkpoints:
    builder = experiment.make_builder(cfg)
    ckpt = Checkpointer(rd.checkpoints)
    for step, seed in checkpoints:
      state = builder.make_learner(iter(()), seed=seed).save()
      ckpt.save({'learner_state': state, 'learner_steps': step}, step)
  return cfg


def _run_with_two_checkpoints(path, task: str):
  """A run of `task` with checkpoints at steps 10 and 20 (two differently seeded initial
  states)."""
  make_run(path, task, ((10, 1), (20, 2)))
  return path


@pytest.fixture(scope='module')
def run_with_two_checkpoints(tmp_path_factory):
  """cartpole:swingup, checkpoints 10 and 20."""
  return _run_with_two_checkpoints(tmp_path_factory.mktemp('run'), 'cartpole:swingup')


@pytest.fixture(scope='module')
def balance_run_with_two_checkpoints(tmp_path_factory):
  """cartpole:balance (where even untrained policies earn returns that tell them apart),
  checkpoints 10 and 20."""
  return _run_with_two_checkpoints(tmp_path_factory.mktemp('run'), 'cartpole:balance')
