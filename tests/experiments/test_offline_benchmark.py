"""experiments.offline_benchmark's arguments: a bad --agents or --kinds list fails before any
work; what each PMPO run is told."""

import pytest

from experiments import offline_benchmark


@pytest.mark.parametrize('flag, value', [('--agents', ''), ('--agents', 'pac,dqn'),
                                         ('--agents', 'BC'), ('--kinds', ''),
                                         ('--kinds', 'expert,poor')])
def test_bad_agents_or_kinds_list_is_refused(tmp_path, capsys, flag, value):
  with pytest.raises(SystemExit) as exit_info:
    offline_benchmark.main(['--source_run', str(tmp_path / 'none'), flag, value,
                            '--out', str(tmp_path / 'out')])
  assert exit_info.value.code == 2
  assert flag in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()


def test_pmpo_runs_from_labels_with_the_dataset_mean_as_threshold_by_default(tmp_path,
                                                                             monkeypatch):
  # The command each run gets (the runs themselves are end-to-end tests elsewhere).
  cmds = []
  monkeypatch.setattr(offline_benchmark.subprocess, 'run', lambda cmd, check: cmds.append(cmd))
  args = offline_benchmark.argparse.Namespace(
      task='walker:walk', learner_steps=10, eval_every=5, eval_episodes=1, seed=0,
      bc_alpha=0.8, pmpo_alpha=0.75, success_return=None)
  offline_benchmark._run_offline(tmp_path, 'mixed', 'pmpo', args, dataset_mean_return=477.5)
  args.success_return = 900.0
  offline_benchmark._run_offline(tmp_path, 'mixed', 'pmpo', args, dataset_mean_return=477.5)
  assert len(cmds) == 2, cmds
  for cmd, threshold in zip(cmds, ('477.5', '900.0')):
    text = ' '.join(cmd)
    assert ('--agent policy_loss=pmpo --agent pmpo.source=labels --agent pmpo.alpha=0.75 '
            f'--agent pmpo.success_return={threshold}') in text
    assert f'--run_dir {tmp_path}/runs/mixed_pmpo' in text
