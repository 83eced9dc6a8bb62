"""experiments.planning_benchmark's --planners and --models: a bad one fails before any work."""

import pytest

from experiments import planning_benchmark


@pytest.mark.parametrize(
  'flag, value, named',
  [
    ('--planners', 'cem:learned,mppi:learned', 'planner.method'),
    ('--planners', 'cem:walker', 'reward'),
    ('--models', 'ensemble,rnn', 'model.kind'),
  ],
)
def test_a_bad_planner_or_model_is_refused_naming_it(tmp_path, capsys, flag, value, named):
  with pytest.raises(SystemExit) as exit_info:
    planning_benchmark.main([flag, value, '--out', str(tmp_path / 'out')])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert flag in err and named in err
  assert not (tmp_path / 'out').exists()


def test_planners_are_read_as_method_and_reward():
  args = planning_benchmark.parse_args(['--planners', 'cem,random_shooting:cartpole'])
  assert args.planner_list == [
    ('cem', 'cem', 'learned'),
    ('random_shooting:cartpole', 'random_shooting', 'cartpole'),
  ]


def test_proposal_planners_and_the_policy_baseline_need_a_policy_run(tmp_path, capsys):
  for planners in ('cem:learned:proposals', 'cem:learned:proposals:value', 'policy'):
    with pytest.raises(SystemExit) as exit_info:
      planning_benchmark.parse_args(['--planners', planners])
    assert exit_info.value.code == 2
    assert 'planner.proposals_from' in capsys.readouterr().err
  policy_run = ['--agent', 'planner.proposals_from=/r']
  args = planning_benchmark.parse_args(
    ['--planners', 'cem,cem:cartpole:proposals,cem:learned:proposals:value,policy', *policy_run]
  )
  assert args.planner_list == [
    ('cem', 'cem', 'learned'),
    ('cem:cartpole:proposals', 'cem', 'cartpole'),
    ('cem:learned:proposals:value', 'cem', 'learned'),
  ]
  assert args.policy_baseline
  with pytest.raises(SystemExit):
    planning_benchmark.parse_args(['--planners', 'cem:learned:value', *policy_run])
  assert ':proposals[:value]' in capsys.readouterr().err
