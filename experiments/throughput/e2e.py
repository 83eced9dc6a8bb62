"""The e2e benchmark: wall-clock seconds until the evaluator's mean return first reaches
a target, from a fresh run or an existing log."""

import json
import math
import pathlib
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np

from agents.common.logs import get_logger
from experiments.plot_run import new_figure, read_csv, save, wall_clock
from experiments.throughput.program import run_program
from experiments.throughput.timing import Row, print_table, write_csv

log = get_logger('e2e')

E2E_FIELDS = ('source', 'task', 'target', 'reached', 'seconds_to_target', 'env_steps_at_target',
              'learner_steps_at_target', 'return_at_target', 'previous_eval_seconds',
              'previous_eval_return', 'best_return', 'evaluations', 'launcher_seconds_to_target')


def evaluator_csv(path: pathlib.Path) -> pathlib.Path:
  """A CSV file, a run directory (logs/evaluator/logs.csv) or a folder with evaluator.csv."""
  for candidate in (path, path / 'logs' / 'evaluator' / 'logs.csv', path / 'evaluator.csv'):
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(f'no evaluator log at {path} (tried logs/evaluator/logs.csv and '
                          'evaluator.csv)')


def time_to_target(evals: Dict[str, np.ndarray], target: float) -> Row:
  """When the evaluator's mean return first reached `target` (wall-clock summed over resumes)."""
  for need in ('mean_return', 'elapsed_s'):
    if need not in evals:
      raise ValueError(f'the evaluator log has no {need!r} column')
  ret = evals['mean_return']
  wall = wall_clock(evals['elapsed_s'])
  hits = np.flatnonzero(np.isfinite(ret) & (ret >= target))
  row = {'target': target, 'reached': 'yes' if len(hits) else 'no', 'evaluations': len(ret),
         'best_return': float(np.nanmax(ret)) if np.isfinite(ret).any() else math.nan,
         'seconds_to_target': math.nan, 'env_steps_at_target': math.nan,
         'learner_steps_at_target': math.nan, 'return_at_target': math.nan,
         'previous_eval_seconds': math.nan, 'previous_eval_return': math.nan}
  if len(hits):
    i = int(hits[0])
    if i > 0:
      # The return crossed the target between this evaluation and the next: the resolution.
      row.update(previous_eval_seconds=float(wall[i - 1]), previous_eval_return=float(ret[i - 1]))
    row.update(seconds_to_target=float(wall[i]), return_at_target=float(ret[i]),
               env_steps_at_target=float(evals.get('actor_steps', [math.nan] * len(ret))[i]),
               learner_steps_at_target=float(evals.get('learner_steps',
                                                       [math.nan] * len(ret))[i]))
  return row


def bench_e2e(out: pathlib.Path, task: str, target: float, from_run: Optional[str] = None,
              run_dir: Optional[str] = None, max_seconds: float = 3600.0, preset: str = 'cpu',
              agent: Optional[Dict[str, Any]] = None) -> List[Row]:
  """Seconds to the target return: from an existing log, or a run with the defaults
  (stopped with Ctrl-C once the target is logged, or at `max_seconds`)."""
  launcher_s = math.nan
  if from_run:
    source = evaluator_csv(pathlib.Path(from_run))
  else:
    fresh = pathlib.Path(run_dir or tempfile.mkdtemp(prefix='throughput_e2e_'))
    source = fresh / 'logs' / 'evaluator' / 'logs.csv'
    reached_at: List[float] = []
    start = time.time()

    def reached() -> bool:
      ret = read_csv(source).get('mean_return', np.array([]))
      if not reached_at and (ret >= target).any():
        reached_at.append(time.time() - start)
      return bool(reached_at)

    argv = [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', str(fresh),
            '--task', task, '--preset', preset]
    for key, value in (agent or {}).items():
      argv += ['--agent', f'{key}={json.dumps(value)}']
    log.info('%s (until mean return %g)', ' '.join(argv[1:]), target)
    code, _, _, _ = run_program(argv, fresh, timeout_s=max_seconds, poll_s=5.0, until=reached,
                                probe_replay=False)
    log.info('exit code %s; run directory %s', code, fresh)
    launcher_s = reached_at[0] if reached_at else math.nan
  evals = read_csv(source)
  row = {'source': str(source), 'task': task, **time_to_target(evals, target),
         'launcher_seconds_to_target': launcher_s}
  write_csv(out / 'e2e.csv', E2E_FIELDS, [row])
  plot_e2e(evals, row, out / 'e2e.png', task)
  print_table([row], E2E_FIELDS[1:])
  return [row]


def plot_e2e(evals: Dict[str, np.ndarray], row: Row, path: pathlib.Path, task: str):
  fig, (ax,) = new_figure()
  ax.plot(wall_clock(evals['elapsed_s']), evals['mean_return'], marker='o', markersize=3,
          label='evaluation mean return')
  ax.axhline(row['target'], color='tab:red', ls='--', lw=1, label=f'target {row["target"]:g}')
  if row['reached'] == 'yes':
    ax.axvline(row['seconds_to_target'], color='tab:green', lw=1,
               label=f'reached at {row["seconds_to_target"]:.0f} s')
  ax.set(xlabel='wall-clock seconds (evaluator)', ylabel='return', title=f'{task}: end to end')
  ax.set_xlim(left=0)
  ax.legend(loc='best')
  return save(fig, path)
