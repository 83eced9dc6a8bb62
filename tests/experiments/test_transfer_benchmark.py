"""experiments.transfer_benchmark's arguments, summary and data: bad input fails before any
work, the ratios are the ones the issue's targets name, and shots are the first episodes."""

import numpy as np
import pytest

from experiments import transfer_benchmark, transitions
from launch.store.episodes import EpisodeStore
from tests.fakes import random_episode


@pytest.mark.parametrize(
  'extra, named',
  [
    (['--heldout', 'pole_length=0.8'], 'also a --pretrain variant'),
    (['--shots', '1,6'], '--shots'),
    (['--heldout', 'pole_width=2'], 'pole_width'),
    (['--planner', 'mppi:learned'], 'planner.method'),
    (['--model', 'lstm'], '--model'),
    (['--scratch_steps', '0'], '--scratch_steps'),
    (['--finetune_mix', '1'], '--finetune_mix'),
  ],
)
def test_bad_arguments_are_refused_naming_them_before_any_work(tmp_path, capsys, extra, named):
  out = tmp_path / 'out'
  with pytest.raises(SystemExit) as exit_info:
    transfer_benchmark.main(['--run_dir', str(tmp_path), '--out', str(out), *extra])
  assert exit_info.value.code == 2
  assert named in capsys.readouterr().err
  assert not out.exists()


def test_variants_and_default_action_repeat():
  args = transfer_benchmark.parse_args(
    ['--run_dir', 'r', '--pretrain', 'pole_length=0.5;pole_mass=0.2', '--shots', '2,1']
  )
  assert args.pretrain_tasks == [
    'cartpole:swingup@pole_length=0.5',
    'cartpole:swingup@pole_mass=0.2',
  ]
  assert args.heldout_task == 'cartpole:swingup@pole_length=0.6'
  assert args.shot_list == [1, 2]
  assert args.agent[0] == ('planner.action_repeat', 8)
  assert args.scratch_steps == 5000 + 1000  # As many updates as the fine-tuned model's.
  mine = transfer_benchmark.parse_args(['--run_dir', 'r', '--agent', 'planner.action_repeat=2'])
  assert mine.agent == [('planner.action_repeat', 2)]


def test_summary_ratios_by_hand():
  rows = [
    {'method': 'finetuned', 'shots': 1, 'return': 300.0},
    {'method': 'finetuned', 'shots': 1, 'return': 500.0},
    {'method': 'scratch', 'shots': 1, 'return': 200.0},
    {'method': 'bc_finetuned', 'shots': 1, 'return': 800.0},
    {'method': 'zero_shot', 'shots': 0, 'return': 100.0},
    {'method': 'bc_zero_shot', 'shots': 0, 'return': 50.0},
  ]
  (s,) = transfer_benchmark._summary(rows, [1])
  assert s['finetuned'] == 400.0 and s['scratch'] == 200.0 and s['bc_finetuned'] == 800.0
  assert s['over_scratch'] == 2.0 and s['over_bc'] == 0.5
  assert s['zero_shot'] == 100.0 and s['bc_zero_shot'] == 50.0


def test_store_transitions_are_the_first_episodes_steps_in_order(tmp_path):
  episodes = [
    random_episode(np.random.default_rng(i), 4 + i, obs_shape=(3,), action_shape=(1,))
    for i in range(3)
  ]
  with EpisodeStore(tmp_path / 'store').writer('actor_0') as writer:
    for episode in episodes:
      writer.append(episode)
  two = transitions.store_transitions(str(tmp_path / 'store'), limit=2)
  assert two['observation'].shape == (4 + 5, 3) and two['action'].shape == (9, 1)
  np.testing.assert_array_equal(two['observation'][:4], episodes[0].observations[:-1])
  np.testing.assert_array_equal(two['next_observation'][4:], episodes[1].observations[1:])
  np.testing.assert_array_equal(two['reward'][4:], episodes[1].rewards)
  assert len(transitions.store_transitions(str(tmp_path / 'store'))['reward']) == 4 + 5 + 6
  batch = next(transitions.batches(two, 16, seed=0))
  assert batch.observation.shape == (16, 3) and batch.discount.shape == (16,)


def test_mixed_batches_take_the_fraction_from_the_mix_row_for_row():
  def data(offset: float, n: int):
    obs = offset + np.arange(n, dtype=np.float32)[:, None]
    return {
      'observation': obs, 'next_observation': obs + 0.5, 'action': obs * 2,
      'reward': obs[:, 0] * 3,
    }  # fmt: skip

  new, old = data(0.0, 5), data(1000.0, 50)
  for batch in [
    next(transitions.batches(new, 8, seed=s, mix=old, mix_fraction=0.25)) for s in range(5)
  ]:
    obs = batch.observation[:, 0]
    assert np.all(obs[:6] < 5) and np.all(obs[6:] >= 1000)  # 2 of 8 rows from the mix.
    # Each row is one transition: every field indexed by the same draw.
    np.testing.assert_array_equal(batch.next_observation[:, 0], obs + 0.5)
    np.testing.assert_array_equal(batch.action[:, 0], obs * 2)
    np.testing.assert_array_equal(batch.reward, obs * 3)
  plain = next(transitions.batches(new, 8, seed=0, mix=old, mix_fraction=0.0))
  assert np.all(plain.observation < 5)
  with pytest.raises(ValueError, match='mix_fraction'):
    next(transitions.batches(new, 8, seed=0, mix=old, mix_fraction=1.0))


def test_a_run_dir_that_is_no_run_fails_in_one_line(tmp_path, capsys):
  assert (
    transfer_benchmark.main(['--run_dir', str(tmp_path / 'nowhere'), '--out', str(tmp_path)]) == 2
  )
  assert 'nowhere is not a run directory' in capsys.readouterr().err
