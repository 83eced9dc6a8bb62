"""The multi-task offline benchmark's arguments, agents, evaluation rows, summary and plot."""

import json
import pathlib

import pytest

from agents import registry
from agents.common.config import merge_overrides
from experiments import multitask_offline_benchmark as bench
from launch.cli import agent_setting

TASKS = ('cartpole:swingup', 'point_mass:easy')


def test_arguments_are_checked(capsys):
  args = bench.parse_args(['--source_runs', 'a,b', '--seeds', '0,2'])
  assert args.runs == ['a', 'b'] and args.seed_list == [0, 2]
  assert args.agent_list == ['pac', 'bc']  # benchmark 3's pair by default
  for bad, message in (
    (['--source_runs', 'a'], 'at least two runs'),
    (['--source_runs', 'a,b', '--agents', 'pac,sac'], '--agents'),
    (['--source_runs', 'a,b', '--seeds', 'x'], '--seeds'),
    (['--source_runs', 'a,b', '--bc_alpha', '1.0'], '--bc_alpha'),
    (['--source_runs', 'a,b', '--learner_steps', '0'], '--learner_steps'),
    (['--source_runs', 'a,b', '--single_task_steps', '0'], '--single_task_steps'),
    (['--source_runs', 'a,b', '--expert_noise', '-0.1'], '--expert_noise'),
    (['--source_runs', 'a,b', '--expert_noise', 'nan'], '--expert_noise'),
    (['--source_runs', 'a,b', '--expert_labels'], '--expert_labels'),
  ):
    with pytest.raises(SystemExit):
      bench.parse_args(bad)
    assert message in capsys.readouterr().err


def test_bc_is_pac_of_the_same_network_with_weight_one():
  pac = bench.agent_flags('pac', 0.3, ['perceiver.blocks=1'])
  bc = bench.agent_flags('bc', 0.3, ['perceiver.blocks=1'])
  assert pac[1::2] == [
    'network=perceiver',
    'policy_loss=pac',
    'pac.alpha=0.3',
    'perceiver.blocks=1',
  ]
  assert bc[1::2] == ['network=perceiver', 'policy_loss=pac', 'pac.alpha=1.0', 'perceiver.blocks=1']
  assert set(pac[0::2]) == {'--agent'}


def test_the_generalists_differ_in_their_conditioning_alone():
  for agent, conditioning in (
    ('gato', 'prompt'),
    ('gato_task_id', 'task_id'),
    ('gato_single', 'none'),
  ):
    flags = bench.agent_flags(agent, 0.3, gato_settings=['model.num_layers=3'])
    assert flags == [
      *('--algorithm', 'gato', '--agent', f'window.conditioning={conditioning}'),
      *('--agent', 'model.num_layers=3'),
    ]


def test_decay_lr_decays_each_run_over_its_own_updates():
  """--decay_lr: the setting each agent's config spells, after which explicit settings
  still win."""
  assert bench.agent_flags('pac', 0.3, ['lr_decay.steps=5'], decay_steps=900)[-4:] == [
    *('--agent', 'lr_decay.steps=900', '--agent', 'lr_decay.steps=5'),
  ]
  assert bench.agent_flags('gato_single', 0.3, decay_steps=300) == [
    *('--algorithm', 'gato', '--agent', 'window.conditioning=none'),
    *('--agent', 'optim.lr_decay.steps=300'),
  ]
  assert bench.agent_flags('bc_single', 0.3, decay_steps=300) == [
    *('--algorithm', 'bc', '--agent', 'lr_decay.steps=300'),
  ]
  assert bench.agent_flags('bc_single', 0.3) == ['--algorithm', 'bc']
  # Each reaches its agent's real config: the course runs over the run's updates.
  for agent in ('pac', 'gato_task_id', 'bc_single'):
    flags = bench.agent_flags(agent, 0.3, decay_steps=300)
    entry = registry.get(flags[1] if flags[0] == '--algorithm' else 'mpo')
    settings = [agent_setting(s) for s in flags[flags.index('--agent') + 1 :: 2]]
    config = entry.config_class.from_dict(
      merge_overrides(entry.config_class, *({k: v} for k, v in settings))
    )
    decay = config.optim.lr_decay if agent.startswith('gato') else config.lr_decay
    assert decay.steps == 300, agent


def test_a_kept_dataset_is_reused_only_if_made_as_asked(tmp_path):
  where = tmp_path / 'dataset'
  where.mkdir()
  made = {'kind': 'expert', 'greedy': False, 'min_expert_fraction': 0.8, 'expert_noise': 0.3}
  (where / 'manifest.json').write_text(json.dumps({**made, 'num_episodes': 3}))
  common = ['--source_runs', 'a,b', '--kind', 'expert', '--min_expert_fraction', '0.8']
  args = bench.parse_args([*common, '--expert_noise', '0.3'])
  assert bench._dataset(args, args.runs, where)['num_episodes'] == 3
  for other, field in (
    (['--expert_noise', '0.5'], 'expert_noise'),
    (['--expert_noise', '0.3', '--greedy'], 'greedy'),
    (['--expert_noise', '0.3', '--expert_labels'], 'expert_labels'),
  ):
    args = bench.parse_args([*common, *other])
    with pytest.raises(SystemExit, match=f'made with {field}='):
      bench._dataset(args, args.runs, where)


def _write_logs(run_dir: pathlib.Path, scores, single: bool = False):
  """scores: task -> [(learner_steps, return, score)], as the evaluator writes them: a
  run of several tasks a file per task, a one-task run its own evaluator rows."""
  for task, rows in scores.items():
    label = 'evaluator' if single else 'evaluator_' + task.replace(':', '_')
    where = run_dir / 'logs' / label
    where.mkdir(parents=True)
    lines = [f'actor_steps,learner_steps,mean_return,{"mean_score" if single else "score"}']
    lines += [f'100,{s},{r},{c}' for s, r, c in rows]
    (where / 'logs.csv').write_text('\n'.join(lines) + '\n')


def test_rows_summary_and_plot_by_hand(tmp_path):
  rows = []
  finals = {('pac', 0): (80.0, 60.0), ('pac', 1): (70.0, 50.0), ('bc', 0): (40.0, 20.0)}
  for (agent, seed), (a, b) in finals.items():
    run_dir = tmp_path / f'{agent}_{seed}'
    _write_logs(
      run_dir,
      {TASKS[0]: [(100, 1.0, 0.0), (200, 2.0, a)], TASKS[1]: [(100, 1.0, 10.0), (200, 3.0, b)]},
    )
    run_dirs = {task: run_dir for task in TASKS}
    rows += [{'agent': agent, 'seed': seed, **r} for r in bench.evaluations(run_dirs, True)]
  means = [r for r in rows if r['task'] == 'mean' and r['agent'] == 'pac' and r['seed'] == 0]
  assert [(r['learner_steps'], r['score'], r['mean_return']) for r in means] == [
    (100, 5.0, 1.0),
    (200, 70.0, 2.5),
  ]
  # One run a task: matched by evaluation, though their learner steps differ a little.
  single = {task: tmp_path / f'single_{i}' for i, task in enumerate(TASKS)}
  _write_logs(single[TASKS[0]], {TASKS[0]: [(100, 1.0, 10.0), (205, 2.0, 30.0)]}, single=True)
  _write_logs(single[TASKS[1]], {TASKS[1]: [(101, 1.0, 20.0), (200, 3.0, 50.0)]}, single=True)
  one = [{'agent': 'bc_single', 'seed': 0, **r} for r in bench.evaluations(single, False)]
  assert [
    (r['evaluation'], r['learner_steps'], r['score']) for r in one if r['task'] == 'mean'
  ] == [
    (0, 100, 15.0),
    (1, 200, 40.0),
  ]
  # Its compute: the updates of both single-task models; the multi-task run's are its own.
  assert [r['updates'] for r in one if r['task'] == TASKS[0]] == [200, 410]
  assert [r['updates'] for r in means] == [100, 200]
  rows += one
  agents = ['pac', 'bc', 'bc_single']
  summary = {(s['agent'], s['task']): s for s in bench.summarise(rows, agents, TASKS)}
  assert summary[('pac', TASKS[0])]['mean_score'] == 75.0
  assert summary[('pac', TASKS[0])]['spread'] == 10.0
  assert summary[('pac', 'mean')]['final_scores'] == '70.0 60.0'
  assert summary[('pac', 'mean')]['mean_score'] == 65.0
  assert summary[('bc', 'mean')]['seeds'] == 1 and summary[('bc', 'mean')]['spread'] == 0.0
  assert summary[('bc_single', TASKS[1])]['mean_score'] == 50.0
  bench.plot(rows, list(summary.values()), TASKS, tmp_path / 'out.png')
  assert (tmp_path / 'out.png').stat().st_size > 10_000


def test_extra_datasets_go_to_the_runs_of_their_tasks(run_with_two_checkpoints, tmp_path):
  from experiments.make_dataset import build_dataset
  from tests.experiments.conftest import make_run

  other = tmp_path / 'point_mass_run'
  make_run(other, 'point_mass:easy')
  cartpole, both = tmp_path / 'cartpole_extra', tmp_path / 'both_extra'
  build_dataset(str(run_with_two_checkpoints), 'random', 1, str(cartpole))
  build_dataset([str(run_with_two_checkpoints), str(other)], 'random', 1, str(both))
  found = bench.extra_datasets_by_task([cartpole], TASKS, single_task=True)
  assert found == {'cartpole:swingup': [cartpole], 'point_mass:easy': []}
  # A dataset of both tasks is for the multi-task runs only.
  found = bench.extra_datasets_by_task([cartpole, both], TASKS, single_task=False)
  assert found == {'cartpole:swingup': [cartpole], 'point_mass:easy': []}
  with pytest.raises(SystemExit, match='holds several tasks'):
    bench.extra_datasets_by_task([both], TASKS, single_task=True)
  with pytest.raises(SystemExit, match='not tasks of this benchmark'):
    bench.extra_datasets_by_task([cartpole], ('walker:walk', 'point_mass:easy'), single_task=False)
  with pytest.raises(SystemExit, match='has no manifest.json'):
    bench.extra_datasets_by_task([tmp_path / 'nothing'], TASKS, single_task=False)
  args = bench.parse_args(['--source_runs', 'a,b', '--extra_datasets', f'{cartpole},{both}'])
  assert args.extras == [cartpole.resolve(), both.resolve()]


def test_single_task_data_are_the_multi_task_datasets_episodes(
  run_with_two_checkpoints, balance_run_with_two_checkpoints, tmp_path
):
  """'On the same data': each single-task run's dataset holds exactly the episodes of its
  task in the multi-task dataset (the second run's too, seeded as make_dataset seeds it)."""
  import numpy as np

  from launch.store import EpisodeStore

  runs = f'{run_with_two_checkpoints},{balance_run_with_two_checkpoints}'
  args = bench.parse_args(['--source_runs', runs, '--kind', 'expert', '--episodes', '2'])
  bench._dataset(args, args.runs, tmp_path / 'dataset')
  singles = bench.single_task_datasets(args, tmp_path / 'single')
  assert sorted(singles) == ['cartpole:balance', 'cartpole:swingup']

  def observations(path, task):
    store = EpisodeStore(path)
    infos = [i for i in store.index() if i.metadata['task'] == task]
    return [store.read(i.episode_id).observations for i in infos]

  for task, path in singles.items():
    ours, theirs = observations(path, task), observations(tmp_path / 'dataset', task)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
      np.testing.assert_array_equal(a, b)
  # Kept from an earlier call only if made with the same seed.
  with pytest.raises(SystemExit, match='made with seed=1000, not 0'):
    bench._dataset(args, args.runs[1:], singles['cartpole:balance'])


def test_a_kept_run_is_reused_only_on_the_same_datasets(tmp_path):
  """A run kept from an earlier call trained on other --extra_datasets is refused, not
  reported as this call's."""
  from tests.experiments.conftest import make_run

  base, extra = tmp_path / 'dataset', tmp_path / 'dagger1'
  run = tmp_path / 'runs' / 'bc_single_seed0_cartpole_swingup'
  make_run(run, 'cartpole:swingup', datasets=[str(base)])
  bench._check_same_data(run, [base])
  bench._check_same_data(tmp_path / 'runs' / 'not_made_yet', [base, extra])
  with pytest.raises(SystemExit, match=f'other datasets .*differing: {extra}'):
    bench._check_same_data(run, [base, extra])
  with pytest.raises(SystemExit, match=f'differing: {base}'):
    bench._check_same_data(run, [])
