"""The scaling benchmark: the real program with 1, 2, 4... actors, steady-state env and
learner steps/s, and the peak RSS of every node."""

import json
import math
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agents.common.logs import get_logger
from experiments.plot_run import new_figure, save
from experiments.throughput.in_process import mpo_config
from experiments.throughput.program import read_counts, run_program
from experiments.throughput.timing import Row, load_1m, print_table, write_csv

log = get_logger('scaling')

SCALING_FIELDS = ('num_actors', 'env_steps_per_s', 'learner_steps_per_s', 'env_speedup',
                  'learner_speedup', 'env_vs_rate_limit', 'window_s', 'rate_source', 'actor_steps',
                  'learner_steps', 'peak_rss_mb_total', 'wall_s', 'exit_code', 'load_1m')
RSS_FIELDS = ('num_actors', 'node', 'peak_rss_mb')


def _div(a: float, b: float) -> float:
  return a / b if b and math.isfinite(b) else math.nan



def steady_rate(times: Sequence[float], counts: Sequence[float]) -> Tuple[float, float]:
  """(rate, window seconds) between the 2nd and the last change of a polled count.

  The counter file changes every few seconds; timing from the first change after
  the count started skips start-up (imports, compilation, min replay size).
  """
  changes = [(t, c) for i, (t, c) in enumerate(zip(times, counts))
             if c > 0 and (i == 0 or c != counts[i - 1])]
  if len(changes) < 3:
    return math.nan, 0.0
  (t0, c0), (t1, c1) = changes[1], changes[-1]
  return (c1 - c0) / (t1 - t0), t1 - t0


def window_rates(series: Sequence[Tuple[float, Dict[str, float]]], batch_size: int,
                 settle_s: float = 10.0) -> Row:
  """Steady-state env and learner steps/s of a polled run.

  From the replay table when it was reachable: env steps ~ inserts (one item per step,
  plus n-1 at each episode's end), learner steps = samples / batch size, over the time
  from `settle_s` after the learner's first sample (past the rate limiter's start-up
  slack) to the last poll. Else from counter.json (see `steady_rate`).
  """
  replay = [(t, c) for t, c in series if 'replay_samples' in c]
  start = next((t for t, c in replay if c['replay_samples'] > 0), None)
  if start is not None:
    points = [(t, c) for t, c in replay if t >= start + settle_s]
    if len(points) >= 2 and points[-1][0] > points[0][0]:
      (t0, c0), (t1, c1) = points[0], points[-1]
      dt = t1 - t0
      return {'env_steps_per_s': (c1['replay_inserts'] - c0['replay_inserts']) / dt,
              'learner_steps_per_s': (c1['replay_samples'] - c0['replay_samples']) / dt /
                                     batch_size,
              'window_s': dt, 'rate_source': 'replay'}
  times = [t for t, _ in series]
  env, window = steady_rate(times, [c.get('actor_steps', 0) for _, c in series])
  learner, _ = steady_rate(times, [c.get('learner_steps', 0) for _, c in series])
  return {'env_steps_per_s': env, 'learner_steps_per_s': learner, 'window_s': window,
          'rate_source': 'counter'}


def collect_infer_argv(run_dir: pathlib.Path, task: str, num_actors: int, seconds: float,
                       preset: str, agent: Dict[str, Any]) -> List[str]:
  argv = [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', str(run_dir),
          '--task', task, '--num_actors', str(num_actors), '--max_seconds', str(seconds),
          '--preset', preset]
  for key, value in agent.items():
    argv += ['--agent', f'{key}={json.dumps(value)}']
  return argv


def bench_scaling(out: pathlib.Path, task: str, preset: str, agent: Dict[str, Any],
                  actor_counts: Sequence[int], seconds: float, keep_runs: bool = False,
                  program: Optional[Callable[[pathlib.Path, int], List[str]]] = None,
                  poll_s: float = 1.0, settle_s: float = 10.0) -> List[Row]:
  """The real program with each actor count: env and learner steps/s, peak RSS per node.

  `program(run_dir, num_actors)` gives the command (tests pass a stand-in).
  """
  config = mpo_config(preset, agent)
  program = program or (lambda d, n: collect_infer_argv(d, task, n, seconds, preset, agent))
  root = pathlib.Path(tempfile.mkdtemp(prefix='throughput_scaling_'))
  rows, rss_rows = [], []
  try:
    for n in actor_counts:
      run_dir = root / f'actors_{n}'
      load = load_1m()
      log.info('%s actor(s) for %gs in %s', n, seconds, run_dir)
      code, series, sampler, wall = run_program(program(run_dir, n), run_dir,
                                                timeout_s=seconds + 240, poll_s=poll_s)
      if code != 0:
        tail = (run_dir / 'launcher.log').read_text(errors='replace')[-3000:]
        log.info('exit code %s; launcher log tail:\n%s', code, tail)
      rates = window_rates(series, config.replay.batch_size, settle_s)
      final = read_counts(run_dir) or {}
      # The env steps/s the sample-to-insert limiter lets through at this learner speed.
      limit = (rates['learner_steps_per_s'] * config.replay.batch_size / config.replay.samples_per_insert
               if config.replay.samples_per_insert else math.nan)
      rows.append({'num_actors': n, **rates,
                   'env_vs_rate_limit': _div(rates['env_steps_per_s'], limit),
                   'actor_steps': final.get('actor_steps'),
                   'learner_steps': final.get('learner_steps'),
                   'peak_rss_mb_total': sum(sampler.peak_mb.values()), 'wall_s': wall,
                   'exit_code': code, 'load_1m': (load + load_1m()) / 2.0})
      rss_rows += [{'num_actors': n, 'node': node, 'peak_rss_mb': mb}
                   for node, mb in sorted(sampler.peak_mb.items())]
  finally:
    if keep_runs:
      log.info('run directories kept in %s', root)
    else:
      shutil.rmtree(root, ignore_errors=True)
  base = rows[0] if rows else {}
  for row in rows:
    row['env_speedup'] = _div(row['env_steps_per_s'], base['env_steps_per_s'])
    row['learner_speedup'] = _div(row['learner_steps_per_s'], base['learner_steps_per_s'])
  write_csv(out / 'scaling.csv', SCALING_FIELDS, rows)
  write_csv(out / 'scaling_rss.csv', RSS_FIELDS, rss_rows)
  plot_scaling(rows, rss_rows, out / 'scaling.png', task)
  print_table(rows, SCALING_FIELDS)
  print_table(rss_rows, RSS_FIELDS)
  return rows


def plot_scaling(rows: Sequence[Row], rss_rows: Sequence[Row], path: pathlib.Path,
                 task: str) -> pathlib.Path:
  fig, (ax, ax_mem) = new_figure(ncols=2, width=5.5)
  n = [r['num_actors'] for r in rows]
  ax.plot(n, [r['env_steps_per_s'] for r in rows], marker='o', label='env steps / s')
  ax.plot(n, [r['learner_steps_per_s'] for r in rows], marker='s', label='learner steps / s')
  ax.set(xlabel='actors', ylabel='steps / s', title='steady-state throughput', xticks=n)
  ax.legend(loc='best')
  nodes = sorted({r['node'] for r in rss_rows}, key=lambda s: (s.split('_')[0], len(s), s))
  width = 0.8 / max(1, len(n))
  for i, count in enumerate(n):
    mb = {r['node']: r['peak_rss_mb'] for r in rss_rows if r['num_actors'] == count}
    ax_mem.bar(np.arange(len(nodes)) + i * width, [mb.get(k, 0.0) for k in nodes], width,
               label=f'{count} actor(s)')
  ax_mem.set_xticks(np.arange(len(nodes)) + width * (len(n) - 1) / 2, nodes, rotation=45,
                    ha='right')
  ax_mem.set(ylabel='peak RSS (MiB)', title='peak memory per node')
  ax_mem.legend(loc='best')
  fig.suptitle(f'{task}: scaling with actors')
  return save(fig, path)
