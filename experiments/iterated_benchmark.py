"""Iterated collect-and-infer against plain online MPO at the same environment-step budget.

  python -m experiments.iterated_benchmark --task cartpole:swingup --env_steps 30000 \\
      --collect_episodes 5 --infer_steps 1500 --out bench_out/iterated

  python -m experiments.iterated_benchmark --task manipulation:reach_site_features \
      --env_steps 100000 --out bench_out/reach_features

Runs (one after another, each its own program, cpu preset, 2 actors):
  online    --max_actor_steps ENV_STEPS
  iterated  --mode iterated with ENV_STEPS / (episode steps * collect_episodes) iterations
            (the task's episode length in actions, counted by stepping one episode as
            the runs see it: 1000 for the suite's tasks, 250 for manipulation's, divided
            by --action_repeat in a pixel run), --infer_steps per iteration
`--extra '--pixels --action_repeat 4'` adds collect_infer flags to both runs (e.g. a
wall-clock budget, `--extra '--max_seconds 3300'`); `--variants iterated` runs one of them.
Writes <out>/iterated.csv (variant, actor_steps, learner_steps, elapsed_s, mean_return, and
success_rate for a task with a goal condition, for every evaluation), <out>/summary.csv and
<out>/iterated.png (return, and success rate where there is one, against environment steps
and against wall-clock). Rerunning with the same --out reuses finished runs.
"""

import argparse
import csv
import os
import pathlib
import shlex
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

COLUMNS = ('actor_steps', 'learner_steps', 'elapsed_s', 'mean_return', 'success_rate')


def episode_steps(task: str, extra: Sequence[str] = ()) -> int:
  """Actions in one episode of `task` as the runs see it, counted by running one: through
  the camera (and its action repeat) when the collect_infer flags `extra` say --pixels, so
  a `*_vision` task, which has no state environment, is counted too."""
  import numpy as np

  from experiments.collect_infer import parse_args
  from launch.cli import given_values
  from launch.config import ExperimentConfig
  from launch.experiment import make_env

  config = ExperimentConfig.from_dict(
    given_values(parse_args([*extra, '--task', task]), ExperimentConfig)
  )
  env = make_env(config, seed=0)
  action = np.zeros(env.action_spec().shape, env.action_spec().dtype)
  env.reset()
  steps = 1
  while not env.step(action).last():
    steps += 1
  return steps


def _evaluations(run_dir: pathlib.Path) -> List[Dict[str, float]]:
  with open(run_dir / 'logs' / 'evaluator' / 'logs.csv') as f:
    return [{k: float(r[k]) for k in COLUMNS if r.get(k)} for r in csv.DictReader(f)]


def plot(rows: List[Dict[str, Any]], title: str, path: pathlib.Path) -> None:
  """Return (and success rate, where every row has one) against environment steps and
  wall-clock, a line per variant."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  variants = list(dict.fromkeys(r['variant'] for r in rows))
  ys = ['mean_return'] + (['success_rate'] if all('success_rate' in r for r in rows) else [])
  fig, grid = plt.subplots(len(ys), 2, figsize=(10, 3.5 * len(ys)), squeeze=False)
  for y, axes in zip(ys, grid):
    for name in variants:
      pts = [r for r in rows if r['variant'] == name]
      for ax, x in zip(axes, ('actor_steps', 'elapsed_s')):
        ax.plot([r[x] for r in pts], [r[y] for r in pts], marker='o', label=name)
    for ax, xlabel in zip(axes, ('environment steps', 'wall-clock s')):
      ax.set_xlabel(xlabel)
      ax.set_ylabel('evaluation return' if y == 'mean_return' else 'evaluation success rate')
      ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--task', default='cartpole:swingup')
  p.add_argument('--env_steps', type=int, default=30000)
  p.add_argument('--collect_episodes', type=int, default=5)
  p.add_argument('--infer_steps', type=int, default=1500)
  p.add_argument('--eval_episodes', type=int, default=3)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='bench_out/iterated')
  p.add_argument('--extra', default='', help='more collect_infer flags, for both runs')
  p.add_argument(
    '--variants', default='online,iterated', help='which runs, comma-separated: online, iterated'
  )
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  out = pathlib.Path(args.out).resolve()
  per_episode = episode_steps(args.task, shlex.split(args.extra))
  iterations = max(1, args.env_steps // (per_episode * args.collect_episodes))
  print(
    f'[iterated-bench] {args.task}: {per_episode} steps an episode, {iterations} iterations of '
    f'{args.collect_episodes} episodes',
    flush=True,
  )
  common = [
    '--task',
    args.task,
    '--seed',
    str(args.seed),
    '--eval_episodes',
    str(args.eval_episodes),
    *shlex.split(args.extra),
  ]
  variants = {
    'online': ['--max_actor_steps', str(args.env_steps), '--eval_every_seconds', '60'],
    'iterated': [
      '--mode',
      'iterated',
      '--iterations',
      str(iterations),
      '--collect_episodes',
      str(args.collect_episodes),
      '--infer_steps',
      str(args.infer_steps),
      '--eval_every_seconds',
      '100000',
    ],
  }
  chosen = [v.strip() for v in args.variants.split(',') if v.strip()]
  unknown = sorted(set(chosen) - set(variants))
  if unknown or not chosen:
    p.error(f'--variants: {", ".join(unknown) or "none"}; choose from online, iterated')
  variants = {name: variants[name] for name in chosen}
  rows, summary = [], []
  for name, extra in variants.items():
    run_dir = out / name
    cmd = [
      sys.executable,
      '-m',
      'experiments.collect_infer',
      '--run_dir',
      str(run_dir),
      *common,
      *extra,
    ]
    print(f'[iterated-bench] {name}: {" ".join(cmd[1:])}', flush=True)
    subprocess.run(cmd, check=True)
    evals = _evaluations(run_dir)
    rows += [{'variant': name, **e} for e in evals]
    summary.append(
      {
        'variant': name,
        'env_steps': int(evals[-1]['actor_steps']),
        'learner_steps': int(evals[-1]['learner_steps']),
        'wall_clock_s': round(evals[-1]['elapsed_s']),
        'final_return': round(evals[-1]['mean_return'], 1),
        'best_return': round(max(e['mean_return'] for e in evals), 1),
      }
    )
    if 'success_rate' in evals[-1]:
      summary[-1]['final_success_rate'] = evals[-1]['success_rate']
      summary[-1]['best_success_rate'] = max(e.get('success_rate', 0.0) for e in evals)
  for fname, table in (('iterated.csv', rows), ('summary.csv', summary)):
    with open(out / fname, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=list(table[0]))
      writer.writeheader()
      writer.writerows(table)
  for s in summary:
    print(' '.join(f'{k}={v}' for k, v in s.items()))
  plot(rows, f'{args.task}: {args.env_steps} environment steps', out / 'iterated.png')
  print(f'[iterated-bench] wrote {out}/iterated.csv, summary.csv, iterated.png', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
