"""experiments.offline_benchmark's arguments: a bad --agents list fails before any work."""

import pytest

from experiments import offline_benchmark


@pytest.mark.parametrize('agents', ['', 'pac,dqn', 'BC'])
def test_bad_agents_list_is_refused(tmp_path, capsys, agents):
  with pytest.raises(SystemExit) as exit_info:
    offline_benchmark.main(['--source_run', str(tmp_path / 'none'), '--agents', agents,
                            '--out', str(tmp_path / 'out')])
  assert exit_info.value.code == 2
  assert '--agents' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()
