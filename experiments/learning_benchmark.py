"""Learning benchmark: runs one experiment per task (and PMPO alpha), then tabulates and plots.

The issue's runs (published MPO networks, 2 actors):

  python -m experiments.learning_benchmark --preset published \\
      --tasks cartpole:swingup,walker:walk,cheetah:run \\
      --max_actor_steps 200000,1000000,1000000 --out bench_out/learning

  python -m experiments.learning_benchmark --preset published \\
      --tasks cartpole:swingup --max_actor_steps 200000 \\
      --policy_loss pmpo --pmpo_alphas 1,0.5,0 --out bench_out/pmpo

Each experiment gets its own run directory <out>/<domain>_<task>/<variant> (variant
'mpo', or 'pmpo_a<alpha>'; with several seeds, --seed 0,1,2, each variant runs once per
seed as '<variant>_s<seed>'); rerunning the same command resumes unfinished runs and
skips finished ones (as collect_infer does, the stored config wins over --preset and
--agent for an existing run directory). Experiments run one after another, each in
its own process.

Writes:
  <out>/learning.csv  task, variant, actor_steps, learner_steps, elapsed_s, mean_return
                      for every evaluation (elapsed_s is wall-clock summed over resumes)
  <out>/summary.csv   task, variant, final_return, best_return, steps_at_best,
                      wall_clock_s, target, reached_target ('yes' by the target's step
                      budget, 'later' only after it, else 'no'), then env_steps and
                      steps_to_target (first evaluation at the target); with several
                      seeds also one '<variant>_seeds' row per task and variant: the mean
                      final, best, wall-clock and env steps over its seeds, reached_target
                      as '<seeds reaching it by the budget>/<seeds>', and the median
                      steps_to_target over the seeds that reached the target at all
  <out>/<domain>_<task>.png  return vs environment steps and vs wall-clock, per variant
"""

import argparse
import csv
import itertools
import math
import multiprocessing
import os
import pathlib
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from agents.common.config import merge_overrides  # pylint: disable=g-import-not-at-top
from agents.mpo.config import MPOConfig  # pylint: disable=g-import-not-at-top
from agents.mpo.presets import PRESETS  # pylint: disable=g-import-not-at-top
from experiments.plot_run import Columns, new_figure, read_csv, save, wall_clock  # pylint: disable=g-import-not-at-top
from launch.cli import agent_setting  # pylint: disable=g-import-not-at-top

# Evaluation returns a task counts as solved at (DMPO-level performance), to be reached
# within the default environment-step budget.
TARGETS = {'cartpole:swingup': 800.0, 'walker:walk': 900.0, 'cheetah:run': 500.0}
DEFAULT_TASKS = 'cartpole:swingup,walker:walk,cheetah:run'
DEFAULT_STEPS = {'cartpole:swingup': 200_000, 'walker:walk': 1_000_000, 'cheetah:run': 1_000_000}
LEARNING_FIELDS = ('task', 'variant', 'actor_steps', 'learner_steps', 'elapsed_s', 'mean_return')
SUMMARY_FIELDS = (
  'task',
  'variant',
  'final_return',
  'best_return',
  'steps_at_best',
  'wall_clock_s',
  'target',
  'reached_target',
  'env_steps',
  'steps_to_target',
)


def _csv_list(kind):
  def parse(text: str):
    try:
      return [kind(v) for v in text.split(',') if v.strip()]
    except ValueError:
      raise argparse.ArgumentTypeError(f'expected a comma-separated list, got {text!r}') from None

  return parse


def parse_args(argv):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    '--tasks',
    type=_csv_list(str),
    default=_csv_list(str)(DEFAULT_TASKS),
    help=f'comma-separated dm_control tasks (default {DEFAULT_TASKS})',
  )
  p.add_argument(
    '--max_actor_steps',
    type=_csv_list(int),
    default=None,
    help='environment-step budget: one value for all tasks or one per task '
    '(default: 200000 for cartpole:swingup, 1000000 otherwise)',
  )
  p.add_argument(
    '--max_seconds',
    type=float,
    default=None,
    help='wall-clock budget per experiment for this invocation (default: '
    'none, also when resuming a run that an earlier --max_seconds stopped)',
  )
  p.add_argument('--out', default='bench_out/learning')
  p.add_argument('--num_actors', type=int, default=None)
  p.add_argument(
    '--seed',
    type=_csv_list(int),
    default=[0],
    help='one seed, or comma-separated seeds to run every variant once per seed (default 0)',
  )
  p.add_argument('--eval_every_seconds', type=float, default=None)
  p.add_argument('--policy_loss', default='mpo', choices=['mpo', 'pmpo'])
  p.add_argument(
    '--pmpo_alphas',
    type=_csv_list(float),
    default=[1.0, 0.5, 0.0],
    help='with --policy_loss pmpo: one experiment per alpha (default 1,0.5,0)',
  )
  p.add_argument(
    '--preset',
    default='cpu',
    choices=sorted(PRESETS),
    help='network sizes for new runs (default: cpu)',
  )
  p.add_argument(
    '--agent',
    action='append',
    default=[],
    type=agent_setting,
    metavar='FIELD=VALUE',
    help='MPO config override for every experiment',
  )
  args = p.parse_args(argv)
  steps = args.max_actor_steps or [DEFAULT_STEPS.get(t, 1_000_000) for t in args.tasks]
  if len(steps) == 1:
    steps = steps * len(args.tasks)
  if not args.tasks or len(steps) != len(args.tasks):
    p.error(f'--max_actor_steps needs one value or one per task ({len(args.tasks)})')
  args.max_actor_steps = steps
  if not args.seed or len(set(args.seed)) != len(args.seed):
    p.error(f'--seed needs one or more distinct seeds, got {args.seed}')
  return args


# --- experiments ----------------------------------------------------------------


def variants(policy_loss: str, alphas: Sequence[float]) -> List[Tuple[str, Dict[str, Any]]]:
  """(name, agent fields) per experiment of a task."""
  if policy_loss == 'mpo':
    return [('mpo', {'policy_loss': 'mpo'})]
  return [(f'pmpo_a{a:g}', {'policy_loss': 'pmpo', 'pmpo.alpha': a}) for a in alphas]


def task_slug(task: str) -> str:
  return task.replace(':', '_')


def plan(args) -> List[Dict[str, Any]]:
  """One entry per experiment: task, variant, run_dir, config values, launcher overrides."""
  from launch.config import ExperimentConfig

  out = pathlib.Path(args.out)
  experiments = []
  for task, budget in zip(args.tasks, args.max_actor_steps):
    for (group, fields), seed in itertools.product(
      variants(args.policy_loss, args.pmpo_alphas), args.seed
    ):
      # One seed keeps the plain variant name, so single-seed runs resume as before.
      name = group if len(args.seed) == 1 else f'{group}_s{seed}'
      overrides = {
        'max_actor_steps': budget,
        'max_seconds': args.max_seconds,
        'num_actors': args.num_actors,
        'eval_every_seconds': args.eval_every_seconds,
      }
      # The wall-clock budget is this invocation's: without --max_seconds a resumed run
      # drops the one an earlier invocation stored (the others keep their stored values).
      overrides = {
        k: v
        for k, v in overrides.items()
        if (v is not None or k == 'max_seconds') and k in ExperimentConfig.resumable_fields()
      }
      run_dir = out / task_slug(task) / name
      values = {
        'run_dir': str(run_dir),
        'task': task,
        'seed': seed,
        **overrides,
        'agent': merge_overrides(
          MPOConfig, PRESETS[args.preset], *({k: v} for k, v in args.agent), fields
        ),
      }
      ExperimentConfig.from_dict(values)  # a bad flag fails here, before anything runs
      experiments.append(
        {
          'task': task,
          'variant': name,
          'group': group,
          'run_dir': run_dir,
          'values': values,
          'overrides': overrides,
        }
      )
  return experiments


def finished(run_dir: pathlib.Path, max_actor_steps: int) -> bool:
  """The run's last evaluation already spent its step budget (its final evaluation is logged)."""
  ev = read_csv(run_dir / 'logs' / 'evaluator' / 'logs.csv')
  steps = ev.get('actor_steps', np.array([]))
  return bool(len(steps)) and steps[-1] >= max_actor_steps


def _launch_child(values: Dict[str, Any], overrides: Dict[str, Any]) -> None:
  """Process body: launch.launcher.launch for one experiment (exit 2 on a user error)."""
  from agents.common.errors import UserError
  from launch.config import ExperimentConfig
  from launch.local import launcher

  try:
    launcher.launch(ExperimentConfig.from_dict(values), overrides)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  except KeyboardInterrupt:
    sys.exit(130)


def run_experiment(values: Dict[str, Any], overrides: Dict[str, Any]) -> int:
  """Runs one experiment to its budget in a fresh process and returns its exit code.

  A fresh process per experiment because Launchpad keeps process-wide signal state:
  only the first program launched in a process handles Ctrl-C and the graceful
  termination notice. Ctrl-C reaches the child too, which stops its program cleanly.
  """
  proc = multiprocessing.get_context('spawn').Process(
    target=_launch_child, args=(values, overrides), name='benchmark-launch'
  )
  proc.start()
  try:
    proc.join()
  except KeyboardInterrupt:
    proc.join()
    raise
  return proc.exitcode


# --- results ----------------------------------------------------------------------


def _fmt(x: Optional[float]) -> str:
  """CSV cell: '' for missing, integers without a decimal point, else 10 significant digits."""
  if x is None or not math.isfinite(x):
    return ''
  return str(int(x)) if float(x).is_integer() else f'{x:.10g}'


def summarize(
  task: str, variant: str, evals: Columns, target: Optional[float], by_steps: Optional[float] = None
) -> Dict[str, Any]:
  """One summary row from a run's evaluator columns (actor_steps, mean_return, elapsed_s).

  The target is reached ('yes') when an evaluation at or before `by_steps` environment steps
  (None: any) returns at least `target`; 'later' when only a later one does.
  """
  ret = evals.get('mean_return', np.array([]))
  steps = evals.get('actor_steps', np.full(len(ret), np.nan))
  ok = np.isfinite(ret)
  row = {
    'task': task,
    'variant': variant,
    'final_return': math.nan,
    'best_return': math.nan,
    'steps_at_best': math.nan,
    'wall_clock_s': math.nan,
    'target': target,
    'reached_target': 'no' if target is not None else '',
    'env_steps': math.nan,
    'steps_to_target': math.nan,
  }
  if not ok.any():
    return row
  best = int(np.flatnonzero(ok)[np.argmax(ret[ok])])
  row.update(
    final_return=float(ret[ok][-1]),
    best_return=float(ret[best]),
    steps_at_best=float(steps[best]),
    env_steps=float(np.nanmax(steps)),
  )
  if 'elapsed_s' in evals and np.isfinite(evals['elapsed_s']).any():
    row['wall_clock_s'] = float(np.nanmax(wall_clock(evals['elapsed_s'])))
  if target is not None:
    hits = np.flatnonzero(ok & (ret >= target))
    row['steps_to_target'] = float(steps[hits[0]]) if len(hits) else math.nan
    if not len(hits):
      row['reached_target'] = 'no'
    elif by_steps is None or row['steps_to_target'] <= by_steps:
      row['reached_target'] = 'yes'
    else:
      row['reached_target'] = 'later'
  return row


def across_seeds(task: str, group: str, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
  """One '<group>_seeds' summary row from the per-seed rows of one task and variant."""

  def mean(key):
    vals = np.array([r[key] for r in rows], dtype=float)
    return float(np.mean(vals[np.isfinite(vals)])) if np.isfinite(vals).any() else math.nan

  hit = np.array([r['steps_to_target'] for r in rows], dtype=float)
  hit = hit[np.isfinite(hit)]
  target = rows[0]['target']
  reached = sum(r['reached_target'] == 'yes' for r in rows)
  return {
    'task': task,
    'variant': f'{group}_seeds',
    'final_return': mean('final_return'),
    'best_return': mean('best_return'),
    'steps_at_best': math.nan,
    'wall_clock_s': mean('wall_clock_s'),
    'target': target,
    'reached_target': f'{reached}/{len(rows)}' if target is not None else '',
    'env_steps': mean('env_steps'),
    'steps_to_target': float(np.median(hit)) if len(hit) else math.nan,
  }


def learning_rows(task: str, variant: str, evals: Columns) -> List[Dict[str, Any]]:
  n = len(evals.get('mean_return', ()))
  col = lambda k: evals.get(k, np.full(n, np.nan))
  elapsed = wall_clock(col('elapsed_s'))
  return [
    {
      'task': task,
      'variant': variant,
      'actor_steps': col('actor_steps')[i],
      'learner_steps': col('learner_steps')[i],
      'elapsed_s': elapsed[i],
      'mean_return': col('mean_return')[i],
    }
    for i in range(n)
  ]


def write_csv(
  path: pathlib.Path, fields: Sequence[str], rows: List[Dict[str, Any]]
) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(fields))
    writer.writeheader()
    for row in rows:
      writer.writerow(
        {
          k: _fmt(v) if isinstance(v, (float, np.floating)) or v is None else v
          for k, v in row.items()
        }
      )
  return path


def plot_task(
  task: str, runs: Dict[str, Columns], target: Optional[float], path: pathlib.Path
) -> pathlib.Path:
  """Return vs environment steps and vs wall-clock seconds, one line per variant."""
  fig, (ax_steps, ax_time) = new_figure(ncols=2)
  for variant, ev in runs.items():
    if 'mean_return' not in ev:
      continue
    n = len(ev['mean_return'])
    ax_steps.plot(
      ev.get('actor_steps', np.full(n, np.nan)),
      ev['mean_return'],
      marker='o',
      markersize=3,
      label=variant,
    )
    ax_time.plot(
      wall_clock(ev.get('elapsed_s', np.full(n, np.nan))),
      ev['mean_return'],
      marker='o',
      markersize=3,
      label=variant,
    )
  for ax, xlabel in ((ax_steps, 'environment steps'), (ax_time, 'wall-clock seconds')):
    if target is not None:
      ax.axhline(target, color='k', linestyle='--', linewidth=1, label=f'target {target:g}')
    ax.set(xlabel=xlabel, ylabel='evaluation return')
    ax.set_xlim(left=0)
    ax.legend(loc='best')
  fig.suptitle(task)
  return save(fig, path)


def print_table(summary: List[Dict[str, Any]]) -> None:
  head = ('task', 'variant', 'final', 'best', 'steps@best', 'wall s', 'target', 'reached')
  keys = (
    'task',
    'variant',
    'final_return',
    'best_return',
    'steps_at_best',
    'wall_clock_s',
    'target',
    'reached_target',
  )

  def cell(key, v):
    if v is None or v == '' or (isinstance(v, float) and not math.isfinite(v)):
      return '-'
    if isinstance(v, float):
      return f'{v:.0f}' if key in ('steps_at_best', 'wall_clock_s', 'target') else f'{v:.1f}'
    return str(v)

  rows = [head] + [tuple(cell(k, r[k]) for k in keys) for r in summary]
  widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
  for r in rows:
    print(
      '  '.join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    )


def collect(experiments: List[Dict[str, Any]], out: pathlib.Path) -> List[pathlib.Path]:
  """Reads every run's evaluator log; writes learning.csv, summary.csv and per-task PNGs."""
  learning, summary, by_task = [], [], {}
  for e in experiments:
    evals = read_csv(pathlib.Path(e['run_dir']) / 'logs' / 'evaluator' / 'logs.csv')
    target = TARGETS.get(e['task'])
    learning += learning_rows(e['task'], e['variant'], evals)
    summary.append(summarize(e['task'], e['variant'], evals, target, DEFAULT_STEPS.get(e['task'])))
    by_task.setdefault(e['task'], {})[e['variant']] = evals
  groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
  for e, row in zip(experiments, summary):
    groups.setdefault((e['task'], e.get('group', e['variant'])), []).append(row)
  summary += [
    across_seeds(task, group, rows) for (task, group), rows in groups.items() if len(rows) > 1
  ]
  paths = [
    write_csv(out / 'learning.csv', LEARNING_FIELDS, learning),
    write_csv(out / 'summary.csv', SUMMARY_FIELDS, summary),
  ]
  paths += [
    plot_task(task, runs, TARGETS.get(task), out / f'{task_slug(task)}.png')
    for task, runs in by_task.items()
  ]
  print()
  print_table(summary)
  return paths


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from agents.common.errors import UserError

  try:
    experiments = plan(args)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  status = 0
  try:
    for i, e in enumerate(experiments, 1):
      label = f'[benchmark {i}/{len(experiments)}] {e["task"]} {e["variant"]}'
      if finished(e['run_dir'], e['overrides']['max_actor_steps']):
        print(f'{label}: already at its step budget in {e["run_dir"]}; skipped', flush=True)
        continue
      print(f'{label} -> {e["run_dir"]}', flush=True)
      code = run_experiment(e['values'], e['overrides'])
      if code != 0:
        print(f'{label}: exited with code {code}', file=sys.stderr, flush=True)
        status = code if code == 2 else 1
  except KeyboardInterrupt:
    print('\n[benchmark] interrupted: tabulating the runs so far', flush=True)
    status = 130
  for path in collect(experiments, pathlib.Path(args.out)):
    print(f'wrote {path}')
  return status


if __name__ == '__main__':
  sys.exit(main())
