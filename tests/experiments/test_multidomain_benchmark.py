"""experiments.multidomain_benchmark: bad tasks fail before any work; its data are real
random-action transitions of each task."""

import numpy as np
import pytest

from experiments import multidomain_benchmark


@pytest.mark.parametrize(
  'tasks, named',
  [
    ('cartpole:swingup', 'at least two different tasks'),
    ('cartpole:swingup,cartpole:swingup', 'at least two different tasks'),
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
