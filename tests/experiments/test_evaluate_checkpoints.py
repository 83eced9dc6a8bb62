"""Evaluating a run's kept checkpoints again: real checkpoints, real physics."""

import csv

import acme
import numpy as np
import pytest
from acme.utils import loggers

from agents.common.errors import ConfigError
from agents.variable_client import FixedVariables, acting_params
from environments.references import normalised_score, references
from experiments.evaluate_checkpoints import _with_settings, evaluate_checkpoints, main
from launch import experiment
from launch.checkpointing import Checkpointer
from launch.config import ExperimentConfig
from launch.run_dir import RunDir


def _played(run, step, seed):
  """The return of one greedy episode of `step`'s policy on an environment of `seed`."""
  cfg = ExperimentConfig.from_dict(RunDir(str(run)).read_config())
  params = acting_params(Checkpointer(RunDir(str(run)).checkpoints).restore(step)['learner_state'])
  actor = experiment.make_builder(cfg).make_actor(
    FixedVariables(params), adder=None, seed=cfg.seed, deterministic=True
  )
  env = experiment.make_env(cfg, seed=seed, task=cfg.task)
  loop = acme.EnvironmentLoop(env, actor, should_update=False, logger=loggers.NoOpLogger())
  return float(loop.run_episode()['episode_return'])


def test_each_checkpoint_plays_the_same_seeded_episodes(balance_run_with_two_checkpoints):
  seen = []
  rows = evaluate_checkpoints(str(balance_run_with_two_checkpoints), 2, seed=7, on_row=seen.append)
  assert seen == rows
  assert [(r['learner_steps'], r['task'], r['episodes']) for r in rows] == [
    (10, 'cartpole:balance', 2),
    (20, 'cartpole:balance', 2),
  ]
  for row in rows:
    returns = [float(r) for r in row['returns'].split()]
    # Episode k is a fresh environment of seed 7 + k, acted on by that checkpoint.
    expected = [
      _played(balance_run_with_two_checkpoints, row['learner_steps'], 7 + k) for k in (0, 1)
    ]
    np.testing.assert_allclose(returns, expected, atol=0.05)
    assert row['mean_return'] == pytest.approx(np.mean(expected), abs=0.05)
    assert (row['min_return'], row['max_return']) == pytest.approx(
      (min(expected), max(expected)), abs=0.05
    )
    ref = references()['cartpole:balance']
    assert row['score'] == pytest.approx(normalised_score(row['mean_return'], ref))
  # Differently initialised policies act differently on the same starts.
  assert rows[0]['returns'] != rows[1]['returns']


def test_named_steps_and_bad_arguments(balance_run_with_two_checkpoints, tmp_path):
  run = str(balance_run_with_two_checkpoints)
  rows = evaluate_checkpoints(run, 1, steps=[20])
  assert [r['learner_steps'] for r in rows] == [20]
  with pytest.raises(ConfigError, match=r'steps: \[15\] not kept .*kept: \[10, 20\]'):
    evaluate_checkpoints(run, 1, steps=[15])
  with pytest.raises(ConfigError, match=r"tasks: \['walker:walk'\] not tasks of"):
    evaluate_checkpoints(run, 1, tasks=['walker:walk'])
  with pytest.raises(ConfigError, match='episodes must be at least 1'):
    evaluate_checkpoints(run, 0)
  with pytest.raises(ConfigError, match='not a run directory'):
    evaluate_checkpoints(str(tmp_path / 'nothing'), 1)
  with pytest.raises(ConfigError, match='agent setting replay.nothing: not a setting of this'):
    evaluate_checkpoints(run, 1, agent_settings=[('replay.nothing', 1)])
  with pytest.raises(ConfigError, match='num_samples'):  # Checked as any config.
    evaluate_checkpoints(run, 1, agent_settings=[('num_samples', 0)])


def test_agent_settings_replace_nested_fields_of_the_stored_config():
  stored = {'agent': {'model': {'greedy_decoding': 'mean', 'context': 10}, 'seed': 1}}
  changed = _with_settings(stored, [('model.greedy_decoding', 'argmax'), ('seed', 2)])
  assert changed == {'agent': {'model': {'greedy_decoding': 'argmax', 'context': 10}, 'seed': 2}}
  with pytest.raises(ConfigError, match='model.context.x'):
    _with_settings(stored, [('model.context.x', 1)])


def test_command_line_writes_the_rows(balance_run_with_two_checkpoints, tmp_path, capsys):
  out = tmp_path / 'evaluations.csv'
  argv = ['--run_dir', str(balance_run_with_two_checkpoints), '--episodes', '1', '--steps', '10']
  assert main(argv + ['--out', str(out)]) == 0
  with open(out, newline='') as f:
    (row,) = list(csv.DictReader(f))
  assert row['learner_steps'] == '10' and row['task'] == 'cartpole:balance'
  assert float(row['mean_return']) == pytest.approx(
    _played(balance_run_with_two_checkpoints, 10, 100), abs=0.05
  )
  assert 'cartpole:balance: mean return' in capsys.readouterr().out
  assert main(['--run_dir', str(balance_run_with_two_checkpoints), '--steps', '11']) == 2
  assert 'steps: [11] not kept' in capsys.readouterr().err
