"""Multi-task runs: the --tasks list, actors spread by weight, bodies per agent, scores."""

import collections
import json

import pytest

from agents.common.errors import ConfigError
from environments.references import (
  REFERENCES_FILE,
  Reference,
  normalised_score,
  read_references,
  score_tasks,
)
from launch import experiment
from launch.cli import given_values
from launch.config import ExperimentConfig
from launch.tasks import assign_task, parse_tasks, task_log_label, tasks_without_actors
from tests.fakes import tiny_config

CARTPOLE, POINT_MASS, PENDULUM = 'cartpole:swingup', 'point_mass:easy', 'pendulum:swingup'
TINY_GATO = {
  'model': {'model_size': 16, 'num_heads': 2, 'num_layers': 1, 'context': 42},
  'window': {'prompt_tokens': 14},
  'replay': {'batch_size': 4},
}


def test_tasks_parse_with_weights_and_keep_variant_commas():
  assert parse_tasks('cartpole:swingup=2, walker:walk') == (
    ('cartpole:swingup', 2.0),
    ('walker:walk', 1.0),
  )
  assert parse_tasks('cartpole:swingup@pole_length=0.8,pole_mass=0.2=3,walker:walk=0.5') == (
    ('cartpole:swingup@pole_length=0.8,pole_mass=0.2', 3.0),
    ('walker:walk', 0.5),
  )
  for bad, says in [
    ('cartpole:swingup,,walker:walk', 'empty entry'),
    ('swingup', "'domain:task'"),
    ('cartpole:swingup=0', 'must be a finite number > 0'),
    ('cartpole:swingup=two', 'not a number'),
    ('walker:walk,walker:walk=2', 'more than once'),
  ]:
    with pytest.raises(ConfigError, match=says):
      parse_tasks(bad)


def test_actors_are_spread_over_tasks_by_weight():
  even = (('a', 1.0), ('b', 1.0), ('c', 1.0))
  assert [assign_task(i, even) for i in range(7)] == list('abcabca')
  two_to_one = (('a', 2.0), ('b', 1.0))
  assert [assign_task(i, two_to_one) for i in range(6)] == list('abaaba')
  # Any first n actors split within one actor of n * weight / total.
  weights = (('a', 5.0), ('b', 3.0), ('c', 1.0), ('d', 1.0))
  counts = collections.Counter()
  for n in range(1, 41):
    counts[assign_task(n - 1, weights)] += 1
    for task, w in weights:
      assert abs(counts[task] - n * w / 10) < 1, (n, counts)
  assert tasks_without_actors(weights, 2) == ['c', 'd']
  assert tasks_without_actors(weights, 40) == []


def test_config_and_cli_take_tasks(tmp_path):
  config = tiny_config(tmp_path / 'r', tasks=f'{CARTPOLE}=2,{POINT_MASS}')
  assert config.task_names == (CARTPOLE, POINT_MASS)
  assert config.task_weights == ((CARTPOLE, 2.0), (POINT_MASS, 1.0))
  assert tiny_config(tmp_path / 'r').task_names == (CARTPOLE,)
  assert ExperimentConfig.from_dict(config.to_dict()).tasks == config.tasks  # config.json
  with pytest.raises(ConfigError, match='envs_per_actor.*1 in a run of several tasks'):
    tiny_config(tmp_path / 'r', tasks=f'{CARTPOLE},{POINT_MASS}', envs_per_actor=2)
  with pytest.raises(ConfigError, match="task='walker:walk' is invalid: with tasks"):
    tiny_config(tmp_path / 'r', task='walker:walk', tasks=f'{CARTPOLE},{POINT_MASS}')
  with pytest.raises(ConfigError, match='weight'):
    tiny_config(tmp_path / 'r', tasks=f'{CARTPOLE}=-1')

  from experiments.collect_infer import parse_args

  args = parse_args(['--tasks', f'{CARTPOLE},{POINT_MASS}=3'])
  assert given_values(args, ExperimentConfig)['tasks'] == f'{CARTPOLE},{POINT_MASS}=3'
  assert task_log_label('cartpole:swingup') == 'evaluator_cartpole_swingup'


def test_one_body_agents_refuse_tasks_of_different_specs(tmp_path):
  bc = tiny_config(tmp_path / 'r', algorithm='bc', agent={}, tasks=f'{CARTPOLE},{POINT_MASS}')
  with pytest.raises(ConfigError) as error:
    experiment.bodies(bc)
  message = str(error.value)
  assert "algorithm 'bc' acts on one body" in message and '\n' not in message
  assert f'{CARTPOLE}: observations (5,) float32, actions (1,)' in message
  assert f'{POINT_MASS}: observations (4,) float32, actions (2,)' in message
  # Tasks of one spec are fine for it: both cartpoles have 5 observations and 1 action.
  same = tiny_config(tmp_path / 'r', algorithm='bc', agent={}, tasks=f'{CARTPOLE},cartpole:balance')
  assert experiment.make_builder(same, 'cartpole:balance').obs_dim == 5


def test_mpo_places_tasks_of_one_body_or_several_in_one_layout(tmp_path):
  # Two cartpoles share a slot and differ by their one-hot; point_mass has its own slot.
  config = tiny_config(tmp_path / 'r', tasks=f'{CARTPOLE},{POINT_MASS},cartpole:balance')
  builders = {task: experiment.make_builder(config, task) for task in config.task_names}
  assert {b.obs_dim for b in builders.values()} == {5 + 4 + 3}
  assert {b.action_dim for b in builders.values()} == {1 + 2}
  assert [b.task for b in builders.values()] == list(config.task_names)
  same = tiny_config(tmp_path / 'r', tasks=f'{CARTPOLE},cartpole:balance')
  assert experiment.make_builder(same, 'cartpole:balance').obs_dim == 5 + 2
  # A camera run of several tasks still needs one spec for all.
  pixels = tiny_config(tmp_path / 'r', tasks=f'{CARTPOLE},{POINT_MASS}', pixels=True)
  with pytest.raises(ConfigError, match="algorithm 'mpo' acts on one body"):
    experiment.make_builder(pixels)


def test_gato_builds_one_network_for_bodies_of_different_sizes(tmp_path):
  config = tiny_config(
    tmp_path / 'r',
    algorithm='gato',
    tasks=f'{CARTPOLE},{PENDULUM},{POINT_MASS}',
    agent=TINY_GATO,
  )
  builders = {task: experiment.make_builder(config, task) for task in config.task_names}
  tokens = {task: b.layout.num_tokens for task, b in builders.items()}
  assert tokens == {CARTPOLE: 7, PENDULUM: 5, POINT_MASS: 7}  # obs + separator + actions
  assert builders[POINT_MASS].layout.action_dim == 2
  assert [b.task_index for b in builders.values()] == [0, 1, 2]
  # Positions within a timestep: the largest body's, for every builder alike.
  assert {b.sizes() for b in builders.values()} == {builders[CARTPOLE].sizes()}
  assert builders[PENDULUM].sizes().num_positions == 7
  with pytest.raises(ConfigError, match='model.task_tokens=2 is below the 3 tasks'):
    experiment.make_builder(
      tiny_config(
        tmp_path / 'r',
        algorithm='gato',
        tasks=config.tasks,
        agent={**TINY_GATO, 'model': {**TINY_GATO['model'], 'task_tokens': 2}},
      )
    )


def test_normalised_scores_by_hand():
  refs = {'a': Reference(random=10.0, expert=210.0), 'b': Reference(random=0.0, expert=50.0)}
  assert normalised_score(110.0, refs['a']) == pytest.approx(50.0)
  assert normalised_score(10.0, refs['a']) == pytest.approx(0.0)
  assert normalised_score(60.0, refs['b']) == pytest.approx(120.0)
  summary = score_tasks({'a': [100.0, 120.0], 'b': [5.0], 'c': [7.0, 9.0]}, refs)
  assert summary['tasks']['a'] == {
    'mean_return': 110.0,
    'min_return': 100.0,
    'max_return': 120.0,
    'score': pytest.approx(50.0),
  }
  assert summary['tasks']['b']['score'] == pytest.approx(10.0)
  assert 'score' not in summary['tasks']['c']  # no reference: left out, not invented
  assert summary['mean_return'] == pytest.approx((110.0 + 5.0 + 8.0) / 3)
  assert summary['mean_score'] == pytest.approx((50.0 + 10.0) / 2)
  assert 'mean_score' not in score_tasks({'c': [1.0]}, refs)


def test_the_reference_file_says_how_each_mean_was_measured(tmp_path):
  data = json.loads(REFERENCES_FILE.read_text())
  assert data['version'] >= 1
  for task, entry in data['tasks'].items():
    for kind in ('random', 'expert'):
      if kind in entry:
        assert entry[kind]['episodes'] >= 1 and entry[kind]['how'], (task, kind)
  refs = read_references()
  assert refs[CARTPOLE].expert == pytest.approx(859.24)  # the cpu preset's final evaluation
  assert refs[POINT_MASS].expert == pytest.approx(908.53)  # its final evaluation at 200k steps
  assert refs[PENDULUM].expert == pytest.approx(795.2)  # its final evaluation at 200k steps
  acrobot = 'acrobot:swingup'
  assert acrobot not in refs and 'random' in data['tasks'][acrobot]  # no expert yet
  bad = tmp_path / 'refs.json'
  bad.write_text(
    json.dumps({'tasks': {'x:y': {'random': {'mean_return': 5}, 'expert': {'mean_return': 1}}}})
  )
  with pytest.raises(ValueError, match='x:y: the expert mean must be above'):
    read_references(bad)
