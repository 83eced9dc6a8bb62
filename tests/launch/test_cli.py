"""The command line is generated from ExperimentConfig: one source for names, defaults and help."""

import dataclasses

import pytest

from experiments import collect_infer
from launch.cli import agent_setting, cli_fields, given_values
from launch.config import ExperimentConfig
from launch.local import launcher


def test_every_experiment_field_but_nested_configs_has_a_flag():
  names = {f.name for f in cli_fields(ExperimentConfig)}
  nested = {'agent', 'slurm'}  # --agent/--preset and --slurm KEY=VALUE set these.
  assert names == {f.name for f in dataclasses.fields(ExperimentConfig)} - nested


def test_flags_not_given_are_absent_and_given_ones_are_typed():
  args = collect_infer.parse_args(
    [
      '--num_actors',
      '3',
      '--max_seconds',
      '60',
      '--datasets',
      'a',
      'b',
      '--launch',
      'local_mt',
      '--no_store',
      '--from_scratch',
    ]
  )
  assert given_values(args, ExperimentConfig) == {
    'num_actors': 3,
    'max_seconds': 60.0,
    'datasets': ['a', 'b'],
    'launch_type': 'local_mt',
    'store_episodes': False,
    'warm_start': False,
  }
  assert given_values(collect_infer.parse_args([]), ExperimentConfig) == {}
  args = collect_infer.parse_args(['--store_episodes', '--warm_start'])
  assert given_values(args, ExperimentConfig) == {'store_episodes': True, 'warm_start': True}


def test_choices_come_from_the_config(capsys):
  with pytest.raises(SystemExit):
    collect_infer.parse_args(['--mode', 'sideways'])
  err = capsys.readouterr().err
  assert "invalid choice: 'sideways'" in err and 'offline_to_online' in err


def test_help_shows_defaults_and_which_fields_a_relaunch_may_change(capsys):
  with pytest.raises(SystemExit):
    collect_infer.parse_args(['--help'])
  out = ' '.join(capsys.readouterr().out.split())
  assert (
    'environment-step budget (the program stops at whichever budget comes first) '
    '(default: 200000) [resumable]' in out
  )
  assert 'environments/variants.py) (default: cartpole:swingup)' in out
  assert 'domain:task (default: cartpole:swingup) [resumable]' not in out


def test_resumable_fields_are_marked_on_the_config_and_used_by_the_launcher(tmp_path):
  resumable = set(ExperimentConfig.resumable_fields())
  assert {'max_actor_steps', 'mode', 'num_actors', 'external_ratio'} <= resumable
  assert not {'task', 'seed', 'algorithm', 'agent', 'run_dir'} & resumable
  stored = ExperimentConfig(run_dir=str(tmp_path), max_actor_steps=1000, seed=3)
  config = launcher.effective_config(
    ExperimentConfig(run_dir=str(tmp_path)), {'max_actor_steps': 5000, 'seed': 9}, stored
  )
  assert config.max_actor_steps == 5000  # resumable: the relaunch changes it
  assert config.seed == 3  # not resumable: the stored value stays


def test_a_dataset_of_expert_labels_is_refused_before_launch_for_a_value_learner(tmp_path):
  import numpy as np

  from agents.common.errors import ConfigError
  from launch.run_dir import RunDir
  from launch.store.episodes import Episode, EpisodeStore
  from tests.fakes import tiny_config

  def episode(label):
    meta = {'task': 'cartpole:swingup', **({'action_label': label} if label else {})}
    return Episode(
      observations=np.zeros((3, 5), np.float32),
      actions=np.zeros((2, 1), np.float32),
      rewards=np.zeros(2, np.float32),
      discounts=np.ones(2, np.float32),
      metadata=meta,
    )

  labelled, mixed = str(tmp_path / 'labelled'), str(tmp_path / 'mixed')
  for where, labels in ((labelled, ['expert', 'expert']), (mixed, ['expert', None])):
    with EpisodeStore(where).writer('make_dataset') as writer:
      for label in labels:
        writer.append(episode(label))
  run_dir = RunDir(str(tmp_path / 'run'))

  def check(algorithm, dataset):
    settings = dict(mode='offline', datasets=[dataset], max_learner_steps=10)
    if algorithm != 'mpo':
      settings['agent'] = {}  # That agent's defaults (TINY_AGENT is MPO's).
    config = tiny_config(run_dir.path, algorithm=algorithm, **settings)
    launcher._check_training_data(config, run_dir)

  # MPO would leave every episode out (their rewards follow other actions) and wait.
  with pytest.raises(ConfigError, match=r"only episodes whose actions are an expert's labels"):
    check('mpo', labelled)
  check('mpo', mixed)  # Some executed episodes: those train it; the rest are left out, logged.
  check('bc', labelled)  # Imitation takes them,
  check('gato', labelled)  # the generalist's windows too.


@pytest.mark.parametrize(
  'text, value',
  [
    ('share_target_samples=true', True),
    ('share_target_samples=True', True),
    ('action_penalty=False', False),
    ('num_samples=10', 10),
    ('policy_layer_sizes=[64, 64]', [64, 64]),
    ('policy_loss=pac', 'pac'),
  ],
)
def test_agent_settings_read_json_and_python_booleans(text, value):
  assert agent_setting(text) == (text.partition('=')[0], value)
