"""The few-shot benchmark's arguments, run flags, k-shot stores and summary."""

import json

import numpy as np
import pytest

from experiments import fewshot_benchmark as bench
from launch.store.episodes import EpisodeStore
from tests.fakes import random_episode


def test_arguments_are_checked(capsys):
  args = bench.parse_args(['--pretrain_runs', 'a,b', '--heldout_run', 'c', '--shots', '50,10'])
  assert args.pretrain_list == ['a', 'b'] and args.shot_list == [10, 50]
  assert args.seed_list == [0, 1, 2]
  for bad, message in (
    (['--pretrain_runs', 'a,c', '--heldout_run', 'c'], 'hold out a task'),
    (['--pretrain_runs', 'a', '--heldout_run', 'c', '--shots', '0,10'], '--shots'),
    (['--pretrain_runs', 'a', '--heldout_run', 'c', '--shots', 'ten'], '--shots'),
    (['--pretrain_runs', 'a', '--heldout_run', 'c', '--seeds', '-1'], '--seeds'),
    (['--pretrain_runs', 'a', '--heldout_run', 'c', '--finetune_steps', '0'], '--finetune_steps'),
  ):
    with pytest.raises(SystemExit):
      bench.parse_args(bad)
    assert message in capsys.readouterr().err


def test_pretrained_and_scratch_runs_differ_in_their_start_alone(tmp_path):
  tasks = ['cartpole:swingup', 'reacher:easy', 'point_mass:easy']
  common = dict(eval_episodes=2, seed=1, settings=['optim.learning_rate=0.001'])
  scratch = bench.run_flags(tasks, tasks[-1], tmp_path / 'shots', 100, 50, **common)
  pretrained = bench.run_flags(
    tasks, tasks[-1], tmp_path / 'shots', 100, 50, init=tmp_path / 'pre', **common
  )
  i = pretrained.index('--init_checkpoint')
  assert pretrained[:i] + pretrained[i + 2 :] == scratch and pretrained[i + 1] == str(
    tmp_path / 'pre'
  )
  # Every run names all the tasks (one network) and acts as the held-out one.
  assert scratch[scratch.index('--tasks') + 1] == ','.join(tasks)
  assert scratch[scratch.index('--task') + 1] == 'point_mass:easy'
  assert scratch[-2:] == ['--agent', 'optim.learning_rate=0.001']


def test_a_k_shot_store_holds_the_first_k_episodes(tmp_path):
  rng = np.random.default_rng(0)
  source = EpisodeStore(tmp_path / 'all')
  episodes = [random_episode(rng, 5 + i) for i in range(5)]
  with source.writer('make_dataset') as writer:
    for e in episodes:
      writer.append(e)
  assert bench.first_episodes(tmp_path / 'all', tmp_path / 'three', 3) == 3
  kept = EpisodeStore(tmp_path / 'three')
  assert [i.length for i in kept.index()] == [5, 6, 7]
  for info, episode in zip(kept.index(), episodes):
    np.testing.assert_array_equal(kept.read(info.episode_id).observations, episode.observations)
  assert json.loads((tmp_path / 'three' / 'manifest.json').read_text())['num_episodes'] == 3
  # Made once: a rerun reads what is there; asking for more than there are gives all.
  assert bench.first_episodes(tmp_path / 'all', tmp_path / 'three', 3) == 3
  assert len(EpisodeStore(tmp_path / 'three').index()) == 3
  assert bench.first_episodes(tmp_path / 'all', tmp_path / 'many', 9) == 5


def test_summary_by_hand_and_the_plot(tmp_path):
  rows = []
  for variant, shots, finals in (
    ('pretrained', 10, (60.0, 40.0)),
    ('scratch', 10, (30.0, 20.0)),
    ('scratch', 50, (70.0, 70.0)),
  ):
    for seed, final in enumerate(finals):
      for evaluation, score in enumerate((0.0, final)):
        rows.append(
          {'variant': variant, 'shots': shots, 'seed': seed, 'evaluation': evaluation,
           'score': score}
        )  # fmt: skip
  summary = {(s['variant'], s['shots']): s for s in bench.summarise(rows)}
  assert summary[('pretrained', 10)]['mean_score'] == 50.0
  assert summary[('pretrained', 10)]['spread'] == 20.0
  assert summary[('pretrained', 10)]['final_scores'] == '60.0 40.0'
  assert summary[('pretrained', 10)]['over_scratch'] == 2.0
  assert summary[('scratch', 10)]['over_scratch'] is None
  assert summary[('scratch', 50)]['mean_score'] == 70.0
  bench.plot(list(summary.values()), 12.5, tmp_path / 'fewshot.png')
  assert (tmp_path / 'fewshot.png').stat().st_size > 10_000
