"""Tests for experiments.plot_run and the learning benchmark's tabulation, on real-format logs."""

import math
import pathlib

import numpy as np
import pytest
from acme.utils.loggers import CSVLogger

from experiments import learning_benchmark as bench
from experiments import plot_run

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _log(run_dir: pathlib.Path, label: str, rows, repeat_header: bool = False):
  """Writes rows the way launch/logs.py does.

  acme's CSVLogger appending to <run>/logs/<label>/logs.csv.
  """
  path = run_dir / 'logs' / label / 'logs.csv'
  if repeat_header:
    # A resumed writer that repeats the header (acme itself only writes it into an empty file).
    with open(path, 'a') as f:
      f.write(','.join(sorted(rows[0])) + '\n')
  logger = CSVLogger(str(run_dir), label=label, add_uid=False, flush_every=1)
  for row in rows:
    logger.write(row)
  logger.close()
  return path


def _eval_row(steps, ret, elapsed):
  return {
    'actor_episodes': steps // 1000,
    'actor_steps': steps,
    'learner_steps': steps // 8,
    'mean_return': ret,
    'min_return': ret - 5.0,
    'max_return': ret + 5.0,
    'elapsed_s': elapsed,
  }


@pytest.fixture
def run_dir(tmp_path):
  run = tmp_path / 'run'
  # First launch, then a resume: evaluator's elapsed_s restarts, the header is repeated.
  _log(run, 'evaluator', [_eval_row(4000, 20.0, 30.0), _eval_row(8000, 150.5, 60.0)])
  _log(
    run,
    'evaluator',
    [_eval_row(12000, 410.25, 25.0), _eval_row(16000, 380.0, 50.0)],
    repeat_header=True,
  )
  learner = [
    {
      'critic_loss': 4.0 - 0.1 * i,
      'policy_loss': 50.0 - i,
      'temperature': 1.0 / (i + 1),
      'learner_steps': 100 * (i + 1),
      'learner_walltime': 2.0 * i,
    }
    for i in range(6)
  ]
  _log(run, 'learner', learner[:3])
  _log(run, 'learner', learner[3:])  # resume without a repeated header: acme's own behaviour
  for a in range(2):
    _log(
      run,
      f'actor_{a}',
      [
        {
          'actor_episodes': 2 * i + a,
          'actor_steps': 1000 * (2 * i + a + 1),
          'episode_length': 1000,
          'episode_return': 10.0 * i,
          'steps_per_second': 80.0 + i,
          'learner_steps': 50 * i,
        }
        for i in range(4)
      ],
    )
  return run


def test_read_csv_skips_repeated_header_and_keeps_numbers(run_dir):
  ev = plot_run.read_csv(run_dir / 'logs' / 'evaluator' / 'logs.csv')
  np.testing.assert_array_equal(ev['actor_steps'], [4000, 8000, 12000, 16000])
  np.testing.assert_allclose(ev['mean_return'], [20.0, 150.5, 410.25, 380.0])
  np.testing.assert_allclose(ev['min_return'], [15.0, 145.5, 405.25, 375.0])
  np.testing.assert_allclose(plot_run.wall_clock(ev['elapsed_s']), [30, 60, 85, 110])
  lr = plot_run.read_csv(run_dir / 'logs' / 'learner' / 'logs.csv')
  np.testing.assert_array_equal(lr['learner_steps'], [100, 200, 300, 400, 500, 600])
  np.testing.assert_allclose(lr['temperature'], [1 / (i + 1) for i in range(6)], rtol=1e-6)


def test_read_csv_tolerates_bad_cells_and_rows(tmp_path):
  path = tmp_path / 'logs.csv'
  path.write_text('a,b\n1,x\n\n2,3\n4\na,b\nnan,inf\n5,6')  # '4': a row cut short
  cols = plot_run.read_csv(path)
  np.testing.assert_array_equal(cols['a'][[0, 1, 3]], [1, 2, 5])
  assert math.isnan(cols['b'][0]) and math.isnan(cols['a'][2]) and cols['b'][2] == math.inf
  assert plot_run.read_csv(tmp_path / 'missing.csv') == {}


def test_a_resumed_logger_with_other_fields_keeps_every_row_readable(tmp_path):
  from launch.logs import make_logger

  # A fresh learner logs before any actor count exists; after a resume the restored
  # counts add columns. Each launch is one logger appending to the same file.
  launches = [
    [{'learner_steps': 1, 'q': 0.5}, {'learner_steps': 2, 'q': 0.25}],
    [{'actor_steps': 9000, 'learner_steps': 3, 'q': 0.125}],
    [{'actor_steps': 9500, 'learner_steps': 4, 'q': 0.0625}],
  ]
  path = tmp_path / 'logs' / 'learner' / 'logs.csv'
  for rows in launches:
    logger = make_logger(tmp_path, 'learner')
    for row in rows:
      logger.write(row)
    logger.close()
    if rows is launches[1]:
      with open(path, 'a') as f:
        f.write('9100,5')  # a row a kill -9 cut short: dropped, not glued to the next
  lines = path.read_text().splitlines()
  # One new header where the columns changed, none where they stayed the same.
  assert lines.count('learner_steps,q') == 1 and lines.count('actor_steps,learner_steps,q') == 1
  cols = plot_run.read_csv(path)
  np.testing.assert_array_equal(cols['learner_steps'], [1, 2, 3, 4])
  np.testing.assert_array_equal(cols['q'], [0.5, 0.25, 0.125, 0.0625])
  np.testing.assert_array_equal(cols['actor_steps'][2:], [9000, 9500])
  assert np.isnan(cols['actor_steps'][:2]).all()


def test_plot_run_writes_pngs(run_dir, tmp_path):
  paths = plot_run.plot_run(run_dir, tmp_path / 'plots')
  assert sorted(p.name for p in paths) == [
    'eval_vs_steps.png',
    'eval_vs_time.png',
    'learner.png',
    'throughput.png',
  ]
  for p in paths:
    assert p.parent == tmp_path / 'plots'
    data = p.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_run_default_out_dir_and_partial_logs(tmp_path):
  run = tmp_path / 'run'
  _log(run, 'evaluator', [_eval_row(4000, 20.0, 30.0)])
  paths = plot_run.plot_run(run)
  assert [p.name for p in paths] == ['eval_vs_steps.png', 'eval_vs_time.png']
  assert all(p.parent == run / 'plots' and p.stat().st_size > 0 for p in paths)


def test_plot_run_adds_the_replay_panel_when_the_replay_log_exists(run_dir, tmp_path):
  # Columns as launch.replay_node logs them: '<table>/<figure>', NaN rates on a first row.
  rows = [
    {
      'elapsed_s': 10 * i,
      'priority_table/size': 100.0 * i,
      'priority_table/inserts_per_s': math.nan if i == 0 else 10.0,
      'priority_table/samples_per_s': math.nan if i == 0 else 320.0,
      'priority_table/insert_wait_s': 0.5 * i,
      'priority_table/sample_wait_s': 2.0,
      'robot_table/size': 0.0,
      'robot_table/inserts_per_s': 0.0,
      'robot_table/samples_per_s': 0.0,
      'robot_table/insert_wait_s': 0.0,
      'robot_table/sample_wait_s': 0.0,
    }
    for i in range(4)
  ]
  _log(run_dir, 'replay', rows)
  cols = plot_run.read_run(run_dir)['replay']
  np.testing.assert_array_equal(cols['priority_table/size'], [0, 100, 200, 300])
  paths = plot_run.plot_run(run_dir, tmp_path / 'plots')
  assert sorted(p.name for p in paths) == [
    'eval_vs_steps.png',
    'eval_vs_time.png',
    'learner.png',
    'replay.png',
    'throughput.png',
  ]
  assert (tmp_path / 'plots' / 'replay.png').read_bytes().startswith(PNG_MAGIC)
  # The replay log alone is enough for a plot.
  alone = tmp_path / 'alone'
  _log(alone, 'replay', rows)
  assert [p.name for p in plot_run.plot_run(alone)] == ['replay.png']


def test_cli_without_logs_exits_2_with_one_line(tmp_path, capsys):
  (tmp_path / 'empty' / 'logs' / 'evaluator').mkdir(parents=True)
  (tmp_path / 'empty' / 'logs' / 'evaluator' / 'logs.csv').write_text('')
  for run in (tmp_path / 'empty', tmp_path / 'missing'):
    assert plot_run.main([str(run)]) == 2
    out, err = capsys.readouterr()
    assert out == '' and err.startswith('error: ') and err.count('\n') == 1
  assert not (tmp_path / 'empty' / 'plots').exists()


def test_cli_prints_written_paths(run_dir, tmp_path, capsys):
  assert plot_run.main([str(run_dir), '--out', str(tmp_path / 'o')]) == 0
  assert len(capsys.readouterr().out.splitlines()) == 4


def test_summarize_best_final_and_target():
  evals = {
    'actor_steps': np.array([1000.0, 2000.0, 3000.0, 4000.0]),
    'mean_return': np.array([100.0, 850.0, np.nan, 700.0]),
    'elapsed_s': np.array([10.0, 20.0, 5.0, 15.0]),
  }  # resumed after the second evaluation
  row = bench.summarize('cartpole:swingup', 'mpo', evals, 800.0)
  assert row['final_return'] == 700.0 and row['best_return'] == 850.0
  assert row['steps_at_best'] == 2000.0 and row['env_steps'] == 4000.0
  assert row['wall_clock_s'] == 35.0
  assert row['reached_target'] == 'yes' and row['steps_to_target'] == 2000.0
  assert bench.summarize('t:x', 'mpo', evals, 900.0)['reached_target'] == 'no'
  # Targets come with a step budget: 800 at 2000 steps is 'later' for a budget of 1500.
  assert bench.summarize('t:x', 'mpo', evals, 800.0, by_steps=2000)['reached_target'] == 'yes'
  late = bench.summarize('t:x', 'mpo', evals, 800.0, by_steps=1500)
  assert late['reached_target'] == 'later' and late['steps_to_target'] == 2000.0
  assert bench.summarize('t:x', 'mpo', evals, None)['reached_target'] == ''
  empty = bench.summarize('t:x', 'mpo', {}, 900.0)
  assert empty['reached_target'] == 'no' and math.isnan(empty['best_return'])


def test_collect_writes_csvs_and_task_png(run_dir, tmp_path, capsys):
  experiments = [
    {'task': 'cartpole:swingup', 'variant': v, 'run_dir': run_dir} for v in ('pmpo_a1', 'pmpo_a0')
  ]
  paths = bench.collect(experiments, tmp_path / 'bench')
  names = sorted(p.name for p in paths)
  assert names == ['cartpole_swingup.png', 'learning.csv', 'summary.csv']
  assert (tmp_path / 'bench' / 'cartpole_swingup.png').read_bytes().startswith(PNG_MAGIC)
  learning = plot_run.read_csv(tmp_path / 'bench' / 'learning.csv')
  np.testing.assert_allclose(learning['elapsed_s'], [30, 60, 85, 110] * 2)
  summary = (tmp_path / 'bench' / 'summary.csv').read_text().splitlines()
  assert summary[0] == ','.join(bench.SUMMARY_FIELDS)
  assert summary[1] == 'cartpole:swingup,pmpo_a1,380,410.25,12000,110,800,no,16000,'
  assert 'pmpo_a0' in capsys.readouterr().out


def test_variants_and_budgets():
  assert bench.variants('mpo', [1.0]) == [('mpo', {'policy_loss': 'mpo'})]
  assert [n for n, _ in bench.variants('pmpo', [1.0, 0.5, 0.0])] == [
    'pmpo_a1',
    'pmpo_a0.5',
    'pmpo_a0',
  ]
  args = bench.parse_args(['--tasks', 'cartpole:swingup,walker:walk', '--max_actor_steps', '3000'])
  assert args.max_actor_steps == [3000, 3000]
  assert bench.parse_args([]).max_actor_steps == [200_000, 1_000_000, 1_000_000]
  with pytest.raises(SystemExit):
    bench.parse_args(['--tasks', 'a:b,c:d,e:f', '--max_actor_steps', '1,2'])


def test_a_resumed_benchmark_run_drops_an_earlier_time_budget(tmp_path):
  from launch.config import ExperimentConfig
  from launch.local.launcher import prepare_run

  common = ['--tasks', 'cartpole:swingup', '--max_actor_steps', '3000', '--out', str(tmp_path)]
  (first,) = bench.plan(bench.parse_args(common + ['--max_seconds', '60']))
  config, run_dir, resumed = prepare_run(
    ExperimentConfig.from_dict(first['values']), first['overrides']
  )
  assert config.max_seconds == 60 and not resumed
  run_dir.release_lock()
  (again,) = bench.plan(bench.parse_args(common))
  config, run_dir, resumed = prepare_run(
    ExperimentConfig.from_dict(again['values']), again['overrides']
  )
  assert resumed and config.max_seconds is None and config.max_actor_steps == 3000
  run_dir.release_lock()


def test_several_seeds_run_each_variant_per_seed_and_add_a_row_across_them(tmp_path):
  args = bench.parse_args(
    [
      '--tasks',
      'cartpole:swingup',
      '--max_actor_steps',
      '3000',
      '--seed',
      '3,7',
      '--out',
      str(tmp_path / 'out'),
    ]
  )
  plan = bench.plan(args)
  assert [(e['variant'], e['group'], e['values']['seed']) for e in plan] == [
    ('mpo_s3', 'mpo', 3),
    ('mpo_s7', 'mpo', 7),
  ]
  assert [e['run_dir'].name for e in plan] == ['mpo_s3', 'mpo_s7']
  # One seed keeps the plain name, so existing single-seed run directories resume.
  (single,) = bench.plan(bench.parse_args(['--tasks', 'cartpole:swingup', '--seed', '5']))
  assert single['variant'] == 'mpo' and single['values']['seed'] == 5
  with pytest.raises(SystemExit):
    bench.parse_args(['--seed', '1,1'])

  # Seed 3 reaches 800 at 8000 steps (within cartpole's 200k budget), seed 7 never does.
  late = tmp_path / 'late'
  _log(late, 'evaluator', [_eval_row(4000, 100.0, 10.0), _eval_row(8000, 300.0, 30.0)])
  early = tmp_path / 'early'
  _log(early, 'evaluator', [_eval_row(4000, 500.0, 10.0), _eval_row(8000, 810.0, 20.0)])
  experiments = [
    {'task': 'cartpole:swingup', 'variant': f'mpo_s{s}', 'group': 'mpo', 'run_dir': d}
    for s, d in ((3, early), (7, late))
  ]
  bench.collect(experiments, tmp_path / 'bench')
  rows = (tmp_path / 'bench' / 'summary.csv').read_text().splitlines()
  assert len(rows) == 4
  assert rows[1] == 'cartpole:swingup,mpo_s3,810,810,8000,20,800,yes,8000,8000'
  assert rows[3] == 'cartpole:swingup,mpo_seeds,555,555,,25,800,1/2,8000,8000'


def test_across_seeds_median_steps_to_target_over_the_seeds_that_reached_it():
  rows = [
    {
      'final_return': f,
      'best_return': f,
      'wall_clock_s': 10.0,
      'target': 800.0,
      'reached_target': r,
      'env_steps': 200.0,
      'steps_to_target': s,
    }
    for f, r, s in (
      (820.0, 'yes', 100.0),
      (790.0, 'later', 230.0),
      (810.0, 'yes', 160.0),
      (700.0, 'no', math.nan),
    )
  ]
  row = bench.across_seeds('t:x', 'mpo', rows)
  assert row['variant'] == 'mpo_seeds' and row['reached_target'] == '2/4'
  assert row['final_return'] == pytest.approx(780.0)
  assert row['steps_to_target'] == 160.0  # median of 100, 160, 230


def _gif(path: pathlib.Path, count: int) -> None:
  """A GIF of `count` 16x16 frames, frame i a solid grey of level 8 * i."""
  from PIL import Image

  path.parent.mkdir(parents=True, exist_ok=True)
  frames = [Image.fromarray(np.full((16, 16, 3), 8 * i, np.uint8)) for i in range(count)]
  frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)


def test_sheet_frames_are_evenly_spaced_with_both_ends():
  assert plot_run.sheet_frames(101, 12) == [0, 9, 18, 27, 36, 45, 55, 64, 73, 82, 91, 100]
  assert plot_run.sheet_frames(3, 12) == [0, 1, 2]
  assert plot_run.sheet_frames(1, 12) == [0]


def test_plot_run_adds_a_contact_sheet_of_the_latest_video(run_dir, tmp_path):
  _gif(run_dir / 'videos' / 'step_40.gif', 5)
  _gif(run_dir / 'videos' / 'step_100.gif', 30)  # Latest by step, not by name.
  (run_dir / 'videos' / 'step_x.gif').write_bytes(b'not a step')
  assert plot_run.latest_video(run_dir).name == 'step_100.gif'
  paths = plot_run.plot_run(run_dir, tmp_path / 'plots')
  sheet = tmp_path / 'plots' / 'contact_sheet.png'
  assert sheet in paths and sheet.read_bytes().startswith(PNG_MAGIC)
  from PIL import Image

  with Image.open(sheet) as image:
    pixels = np.asarray(image.convert('RGB'))
  # The frames' greys are in the sheet: first (0), last (8 * 29) and one between.
  for level in (0, 8 * 29, 8 * round(29 * 5 / 11)):
    assert np.any(np.all(pixels == level, axis=-1)), level


def test_a_damaged_video_is_skipped_with_a_warning(run_dir, tmp_path, capsys):
  (run_dir / 'videos').mkdir(parents=True, exist_ok=True)
  (run_dir / 'videos' / 'step_7.gif').write_bytes(b'GIF89a cut short')
  paths = plot_run.plot_run(run_dir, tmp_path / 'plots')
  assert 'contact_sheet.png' not in [p.name for p in paths]
  assert 'step_7.gif does not read' in capsys.readouterr().err
