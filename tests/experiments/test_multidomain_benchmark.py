"""experiments.multidomain_benchmark: bad tasks fail before any work; its data are real
random-action transitions of each task."""

import numpy as np
import pytest

from experiments import multidomain_benchmark


@pytest.mark.parametrize(
  'tasks, named',
  [
    ('cartpole:swingup', 'at least 2 different tasks'),
    ('cartpole:swingup,cartpole:swingup', 'at least 2 different tasks'),
    ('cartpole:swingup,point_mass:hard_as_nails', 'point_mass:hard_as_nails'),
  ],
)
def test_bad_tasks_are_refused_naming_them(tmp_path, capsys, tasks, named):
  out = tmp_path / 'out'
  with pytest.raises(SystemExit) as exit_info:
    multidomain_benchmark.main(['--tasks', tasks, '--out', str(out)])
  assert exit_info.value.code == 2
  assert named in capsys.readouterr().err
  assert not out.exists()


def test_random_transitions_follow_each_other_within_an_episode():
  data = multidomain_benchmark.random_transitions('point_mass:easy', episodes=1, seed=3)
  assert data['observation'].shape == (1000, 4) and data['action'].shape == (1000, 2)
  np.testing.assert_array_equal(data['next_observation'][:-1], data['observation'][1:])
  assert np.all(np.abs(data['action']) <= 1.0) and data['action'].std() > 0.3
  again = multidomain_benchmark.random_transitions('point_mass:easy', episodes=1, seed=3)
  np.testing.assert_array_equal(again['action'], data['action'])


@pytest.mark.parametrize('seeds', ['', '0,0', 'a,1'])
def test_bad_seeds_are_refused(tmp_path, capsys, seeds):
  with pytest.raises(SystemExit) as exit_info:
    multidomain_benchmark.main(['--seeds', seeds, '--out', str(tmp_path / 'out')])
  assert exit_info.value.code == 2
  assert '--seeds' in capsys.readouterr().err


def test_summary_pairs_each_seeds_models_and_divides_the_means():
  def row(seed, model, task, error):
    return {'seed': seed, 'model': model, 'task': task, 'relative_error': error}

  rows = [
    row(0, 'multi_task', 'a', 0.2),
    row(1, 'multi_task', 'a', 0.4),
    row(0, 'single_task', 'a', 0.4),
    row(1, 'single_task', 'a', 0.8),
    row(0, 'single_task_equal_total', 'a', 0.1),
    row(1, 'single_task_equal_total', 'a', 0.5),
    row(0, 'multi_task', 'b', 1.0),  # No single-task row for b: no line.
  ]
  lines = multidomain_benchmark.summary(rows, ['a', 'b'])
  assert lines == [
    'a: multi-task / single_task relative error 0.50 (mean over 2 seeds; per seed 0.50, 0.50)',
    'a: multi-task / single_task_equal_total relative error 1.00 (mean over 2 seeds; per seed '
    '2.00, 0.80)',
  ]
