"""The peer benchmark's pieces that run in the project's environment (SAC's runs in its own)."""

import math

import numpy as np
import pytest

from environments.suite import make_environment
from experiments import peer_benchmark as pb
from experiments import peer_sac
from experiments.collect_infer import parse_args as collect_infer_args


def _cols(elapsed, returns, steps=None):
  steps = steps if steps is not None else [1000 * (i + 1) for i in range(len(returns))]
  return {
    'elapsed_s': np.array(elapsed, float),
    'env_steps': np.array(steps, float),
    'mean_return': np.array(returns, float),
  }


def test_ratios_compare_first_times_at_fractions_of_sacs_best_return():
  sac = _cols([60, 120, 180, 240], [100, 400, 500, 450])  # best 500
  ours = _cols([70, 130, 190], [90, 420, 300])
  rows = {r['fraction']: r for r in pb.ratios('t', ours, sac, fractions=(0.2, 0.8, 1.0))}
  # 20% = 100: ours first at 130 s (90 < 100), SAC at 60 s.
  assert rows[0.2]['threshold'] == pytest.approx(100.0)
  assert rows[0.2]['ours_s'] == 130 and rows[0.2]['sac_s'] == 60
  assert rows[0.2]['ratio'] == pytest.approx(130 / 60)
  # 80% = 400: ours at 130 s, SAC at 120 s.
  assert rows[0.8]['ratio'] == pytest.approx(130 / 120)
  # 100% = 500: ours never reaches it.
  assert math.isnan(rows[1.0]['ours_s']) and math.isnan(rows[1.0]['ratio'])
  assert rows[1.0]['sac_s'] == 180


def test_no_sac_evaluations_give_no_ratios():
  assert pb.ratios('t', _cols([1], [5]), _cols([], [])) == []


def test_sacs_observation_is_the_vector_the_projects_actors_see():
  ours = make_environment('walker:walk', seed=3)
  from dm_control import suite

  raw = suite.load('walker', 'walk', task_kwargs={'random': 3})
  a, b = ours.reset(), raw.reset()
  for _ in range(5):
    np.testing.assert_allclose(
      peer_sac.flatten_observation(b.observation), a.observation, atol=1e-4
    )
    action = np.full(raw.action_spec().shape, 0.3, np.float32)
    a, b = ours.step(action), raw.step(action)


def test_our_run_reads_its_evaluations_on_the_benchmarks_clock(tmp_path):
  logs = tmp_path / 'collect_infer' / 'logs' / 'evaluator'
  logs.mkdir(parents=True)
  (tmp_path / 'collect_infer.t0').write_text('1000.0')
  (logs / 'logs.csv').write_text(
    'actor_steps,elapsed_s,mean_return,started_at\n4000,50.0,12.5,1075.5\n8000,110.0,30.0,1135.0\n'
  )
  ev = pb.evaluations('collect_infer', tmp_path)
  np.testing.assert_allclose(ev['elapsed_s'], [75.5, 135.0])
  np.testing.assert_allclose(ev['env_steps'], [4000, 8000])


def test_the_pins_are_the_projects_physics():
  assert [p.split('==')[0].lower() for p in pb.pins()] == ['dm_control', 'mujoco']


def test_our_command_is_one_collect_infer_accepts(tmp_path):
  args = pb.parse_args(['--tasks', 'cartpole:swingup', '--minutes', '2'])
  cmd = pb.command('collect_infer', 'cartpole:swingup', tmp_path / 'run', args, t0=0.0)
  assert cmd[1:3] == ['-m', 'experiments.collect_infer']
  parsed = collect_infer_args(cmd[3:])
  assert parsed.max_seconds == 120 and parsed.eval_every_seconds == 60
  assert parsed.task == 'cartpole:swingup' and parsed.run_dir == str(tmp_path / 'run')
  assert parsed.preset is None and not parsed.agent  # the default learner, as `make run` has it


def test_a_tuned_run_of_ours_takes_its_arguments_and_is_never_mixed_up(tmp_path):
  args = pb.parse_args(['--ours_args', '--agent num_samples=10 --num_actors 1'])
  cmd = pb.command('collect_infer', 'walker:walk', tmp_path / 'w' / 'collect_infer', args, 0.0)
  parsed = collect_infer_args(cmd[3:])
  assert parsed.num_actors == 1 and parsed.task == 'walker:walk'
  assert 'num_samples=10' in ' '.join(cmd)
  # A finished default run in the same --out is not taken for the tuned one.
  run_dir = tmp_path / 'w' / 'collect_infer'
  run_dir.mkdir(parents=True)
  (run_dir / 'done').write_text('1\n')
  with pytest.raises(SystemExit, match='another --out'):
    pb.run('collect_infer', 'walker:walk', run_dir, args)
