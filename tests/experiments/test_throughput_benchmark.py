"""Smoke test of experiments.throughput: every benchmark runs once, tiny and short.

Timings here mean nothing; the test only guards the script against rot: each benchmark
writes its CSV with the expected columns and positive, finite ratios, and its PNG.
"""

import csv
import math
import pathlib
import sys

import pytest

from experiments.throughput.actor import bench_actor
from experiments.throughput.e2e import E2E_FIELDS, bench_e2e
from experiments.throughput.learner import bench_learner
from experiments.throughput.replay import bench_replay
from experiments.throughput.scaling import SCALING_FIELDS, bench_scaling, window_rates
from experiments.throughput.timing import FIGURE_FIELDS

TASK = 'cartpole:swingup'
# Tiny networks and batches, 20-step episodes: compiling and filling take seconds.
TINY = {
  'policy_layer_sizes': [8],
  'critic_layer_sizes': [8],
  'num_atoms': 5,
  'num_samples': 2,
  'replay': {'batch_size': 8, 'min_replay_size': 16, 'n_step': 2},
}
FAST = dict(seconds=0.05, repeats=1, max_episode_steps=20)


def _rows(path: pathlib.Path):
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    return reader.fieldnames, list(reader)


def _check(out: pathlib.Path, name: str, figures, ratio_key: str = 'ratio'):
  fields, rows = _rows(out / f'{name}.csv')
  assert [r['figure'] for r in rows] == list(figures)
  for row in rows:
    for key in (ratio_key, 'value', 'ceiling'):
      value = float(row[key])
      assert math.isfinite(value) and value > 0, (name, row['figure'], key, row[key])
  assert tuple(fields) == FIGURE_FIELDS
  _, samples = _rows(out / f'{name}_samples.csv')
  assert len(samples) == len(rows)
  assert (out / f'{name}.png').read_bytes().startswith(b'\x89PNG')


def test_actor_beside_a_replay_server_in_its_own_process(tmp_path):
  # The pixel test below runs the default, a server in the actor's process.
  bench_actor(tmp_path, TASK, 'cpu', TINY, envs_per_actor=(2,), replay_process=True, **FAST)
  figures = ('loop_constant', 'actor_no_adder', 'actor_no_store', 'actor_full', 'actor_full_k2')
  _check(tmp_path, 'actor_replay_process', figures)
  assert not (tmp_path / 'actor.csv').exists()


def test_actor_on_pixels_against_bare_rendering(tmp_path):
  from environments.pixels import PixelSettings

  pixels = PixelSettings(size=16, frame_stack=1)
  agent = {**TINY, 'encoder': {'channels': [4], 'feature_dim': 8}}
  bench_actor(tmp_path, TASK, 'cpu', agent, envs_per_actor=(), pixels=pixels, **FAST)
  _check(
    tmp_path, 'actor_pixels', ('loop_constant', 'actor_no_adder', 'actor_no_store', 'actor_full')
  )
  assert not (tmp_path / 'actor.csv').exists()


def test_the_replay_process_holds_what_the_adder_writes_and_counts_its_cpu():
  import os

  from experiments.throughput.in_process import fill_replay, make_builder, make_env, record_episode
  from experiments.throughput.replay_process import ReplayProcess

  builder = make_builder(TASK, 'cpu', TINY)
  replay = ReplayProcess(TASK, 'cpu', TINY)
  try:
    assert replay._process.pid != os.getpid()  # pylint: disable=protected-access
    before = replay.cpu_seconds()
    episode = record_episode(make_env(TASK, 0, 20), seed=0)
    # Enough inserts that the server's CPU time moves past its clock's 10 ms ticks.
    assert fill_replay(replay, builder, episode, 2000) >= 2000
    assert replay.inserts() >= 2000
    assert replay.cpu_seconds() > before
  finally:
    replay.stop()
  assert not replay._process.is_alive()  # pylint: disable=protected-access
  assert replay._process.exitcode == 0  # pylint: disable=protected-access


def test_replay(tmp_path):
  bench_replay(tmp_path, TASK, 'cpu', TINY, fill=32, settle=0.0, **FAST)
  _check(tmp_path, 'replay', ('adder_inserts', 'dataset_samples', 'adder_vs_insert_need'))


def test_learner(tmp_path):
  bench_learner(tmp_path, TASK, ['cpu'], TINY, fill=32, settle=0.0, **FAST)
  _check(tmp_path, 'learner', ('learner_pipeline',))


def test_learner_layouts_time_the_three_pipelines_against_memory(tmp_path):
  from experiments.throughput.learner_layouts import PIPELINES, measure, plot

  rows = measure(TASK, rounds=1, seconds=0.05, fill=32, agent=TINY)
  assert [r['pipeline'] for r in rows] == [name for name, _, _ in PIPELINES]
  assert [r['batches_a_draw'] for r in rows] == [1, 1, 4]  # The cpu preset's draws.
  for row in rows:
    assert math.isfinite(row['ratio']) and row['ratio'] > 0, row
  assert plot(rows, tmp_path / 'layouts.png').read_bytes().startswith(b'\x89PNG')


# Stands in for collect_infer: counts in counter.json, one "node" child whose stdout is
# its per-node log file, as Launchpad's output_to_files launches nodes.
FAKE_PROGRAM = r"""
import json, pathlib, subprocess, sys, time
run = pathlib.Path(sys.argv[1])
log = run / 'logs' / 'nodes' / '20250101-000000' / 'actor' / '0'
log.parent.mkdir(parents=True)
with open(log, 'w') as out:
  child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], stdout=out)
for i in range(1, 16):
  (run / 'counter.json').write_text(json.dumps(
      {'counts': {'actor_steps': 400 * i, 'learner_steps': 100 * i}}))
  time.sleep(0.1)
child.kill()
child.wait()
"""


def test_scaling_with_a_stand_in_program(tmp_path):
  rows = bench_scaling(
    tmp_path,
    TASK,
    'cpu',
    {},
    [1, 2],
    seconds=2.0,
    poll_s=0.05,
    program=lambda run_dir, n: [sys.executable, '-c', FAKE_PROGRAM, str(run_dir)],
  )
  assert [r['num_actors'] for r in rows] == [1, 2]
  fields, csv_rows = _rows(tmp_path / 'scaling.csv')
  assert tuple(fields) == SCALING_FIELDS and len(csv_rows) == 2
  for row in csv_rows:
    for key in ('env_steps_per_s', 'learner_steps_per_s', 'env_speedup', 'env_vs_rate_limit'):
      value = float(row[key])
      assert math.isfinite(value) and value > 0, (key, row[key])
    assert row['exit_code'] == '0' and row['rate_source'] == 'counter'
  # The stand-in takes 1 learner step per 4 env steps: what batch 128 at SPI 32 (cpu) allows.
  assert float(csv_rows[0]['env_vs_rate_limit']) == pytest.approx(1.0, rel=0.3)
  _, rss = _rows(tmp_path / 'scaling_rss.csv')
  nodes = {r['node'] for r in rss if r['num_actors'] == '1'}
  assert {'launcher', 'actor_0'} <= nodes
  assert all(float(r['peak_rss_mb']) > 0 for r in rss)
  assert (tmp_path / 'scaling.png').read_bytes().startswith(b'\x89PNG')


def test_window_rates_prefer_the_replay_counts():
  # Polls once a second: samples first seen at t=4; 90 inserts and 5 batches of 8 a second.
  series = [
    (float(t), {'actor_steps': 0, 'replay_inserts': 90 * t, 'replay_samples': max(0, t - 3) * 40})
    for t in range(30)
  ]
  rates = window_rates(series, batch_size=8, settle_s=10.0)
  assert rates['rate_source'] == 'replay'
  assert rates['env_steps_per_s'] == pytest.approx(90.0)
  assert rates['learner_steps_per_s'] == pytest.approx(5.0)
  assert rates['window_s'] == pytest.approx(15.0)  # From t=4+10 to the last poll, t=29.


def test_e2e_from_an_evaluator_log(tmp_path):
  log = tmp_path / 'run' / 'logs' / 'evaluator' / 'logs.csv'
  log.parent.mkdir(parents=True)
  # A resumed run: elapsed_s restarts at 0, the time to the target adds both launches.
  log.write_text(
    'actor_steps,elapsed_s,learner_steps,mean_return\n'
    '10000,100.0,2500,150.0\n20000,200.0,5000,700.0\n'
    '30000,50.0,7500,810.0\n40000,150.0,10000,850.0\n'
  )
  (row,) = bench_e2e(tmp_path, TASK, 800.0, from_run=str(tmp_path / 'run'))
  assert row['reached'] == 'yes'
  assert row['seconds_to_target'] == pytest.approx(250.0)
  assert row['env_steps_at_target'] == 30000
  fields, rows = _rows(tmp_path / 'e2e.csv')
  assert tuple(fields) == E2E_FIELDS and float(rows[0]['seconds_to_target']) == 250.0
  assert (tmp_path / 'e2e.png').read_bytes().startswith(b'\x89PNG')
