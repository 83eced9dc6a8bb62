"""Offline benchmark: PAC, PMPO and behaviour cloning on expert and on mixed-quality data.

  python -m experiments.offline_benchmark --source_run runs/cartpole_swingup \\
      --episodes 20 --learner_steps 4000 --out bench_out/offline

From a trained run (its checkpoints) it builds two datasets with
experiments.make_dataset: 'expert' (the newest checkpoint's policy) and 'mixed'
(--poor_fraction of the episodes with uniformly random actions, or with
--poor_policy noisy the oldest kept checkpoint with action noise --noise; the rest
expert). Then, for each dataset, it trains offline (no actors, the evaluator still
evaluates in simulation) with PAC (--bc_alpha), with PMPO from episode labels
(--pmpo_alpha; an episode is successful when its return reaches --success_return,
by default the dataset's mean return) and with the behaviour-cloning baseline, each
for --learner_steps, one process after another (--agents picks which).

Writes:
  <out>/datasets/<kind>/           the episode stores (+ manifest.json)
  <out>/runs/<kind>_<agent>/       each offline run directory
  <out>/offline.csv                kind, agent, episodes, dataset_mean_return, learner_steps,
                                   mean_return for every evaluation
  <out>/summary.csv                kind, agent, episodes, dataset_mean_return, final_return,
                                   best_return
  <out>/offline.png                return against learner steps, one panel per dataset
Rerunning with the same --out reuses finished datasets and runs.
"""

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

AGENTS = ('pac', 'bc', 'pmpo')
KINDS = ('expert', 'mixed')


def _run_offline(out: pathlib.Path, kind: str, agent: str, args,
                 dataset_mean_return: float) -> pathlib.Path:
  run_dir = out / 'runs' / f'{kind}_{agent}'
  cmd = [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', str(run_dir),
         '--task', args.task, '--mode', 'offline', '--datasets', str(out / 'datasets' / kind),
         '--max_learner_steps', str(args.learner_steps),
         '--eval_every_learner_steps', str(args.eval_every), '--eval_every_seconds', '100000',
         '--eval_episodes', str(args.eval_episodes), '--seed', str(args.seed)]
  if agent == 'bc':
    cmd += ['--algorithm', 'bc']
  elif agent == 'pmpo':
    threshold = dataset_mean_return if args.success_return is None else args.success_return
    cmd += ['--agent', 'policy_loss=pmpo', '--agent', 'pmpo.source=labels',
            '--agent', f'pmpo.alpha={args.pmpo_alpha}',
            '--agent', f'pmpo.success_return={threshold}']
  else:
    cmd += ['--agent', 'policy_loss=pac', '--agent', f'pac.alpha={args.bc_alpha}']
  print(f'[offline-bench] {kind} / {agent}: {" ".join(cmd[1:])}', flush=True)
  subprocess.run(cmd, check=True)
  return run_dir


def _evaluations(run_dir: pathlib.Path) -> List[Dict[str, float]]:
  path = run_dir / 'logs' / 'evaluator' / 'logs.csv'
  with open(path) as f:
    return [{'learner_steps': float(r['learner_steps']), 'mean_return': float(r['mean_return'])}
            for r in csv.DictReader(f)]


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--source_run', required=True, help='a trained run with checkpoints')
  p.add_argument('--task', default='cartpole:swingup')
  p.add_argument('--episodes', type=int, default=20, help='episodes per dataset')
  p.add_argument('--poor_fraction', type=float, default=0.5)
  p.add_argument('--poor_policy', choices=['noisy', 'random'], default='random',
                 help='what acts in the poor episodes of the mixed dataset')
  p.add_argument('--noise', type=float, default=1.0, help='action noise of noisy poor episodes')
  p.add_argument('--learner_steps', type=int, default=4000)
  p.add_argument('--eval_every', type=int, default=1000)
  p.add_argument('--eval_episodes', type=int, default=3)
  p.add_argument('--bc_alpha', type=float, default=0.3, help="PAC's behaviour-cloning weight")
  p.add_argument('--pmpo_alpha', type=float, default=0.75,
                 help="PMPO's weight of successful episodes' actions (failed: 1 - alpha)")
  p.add_argument('--success_return', type=float, default=None,
                 help="PMPO's label: episodes with at least this return are successful "
                      "(default: each dataset's mean return)")
  p.add_argument('--agents', default=','.join(AGENTS),
                 help=f'comma-separated, of {", ".join(AGENTS)} (e.g. pac alone for another '
                      '--bc_alpha)')
  p.add_argument('--kinds', default=','.join(KINDS),
                 help=f'comma-separated datasets to train on, of {", ".join(KINDS)}')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='bench_out/offline')
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  agents = [a for a in args.agents.split(',') if a]
  if not agents or set(agents) - set(AGENTS):
    p.error(f'--agents: a comma-separated list of {", ".join(AGENTS)}, got {args.agents!r}')
  kinds = [k for k in args.kinds.split(',') if k]
  if not kinds or set(kinds) - set(KINDS):
    p.error(f'--kinds: a comma-separated list of {", ".join(KINDS)}, got {args.kinds!r}')
  from experiments.make_dataset import build_dataset
  out = pathlib.Path(args.out).resolve()
  manifests = {}
  for kind in kinds:
    where = out / 'datasets' / kind
    if not (where / 'manifest.json').exists():
      build_dataset(args.source_run, kind, args.episodes, str(where),
                    poor_fraction=args.poor_fraction, noise=args.noise, seed=args.seed,
                    poor_policy=args.poor_policy)
    manifests[kind] = json.loads((where / 'manifest.json').read_text())
  rows, summary = [], []
  for kind in kinds:
    for agent in agents:
      run_dir = _run_offline(out, kind, agent, args, manifests[kind]['mean_return'])
      evals = _evaluations(run_dir)
      base = {'kind': kind, 'agent': agent, 'episodes': manifests[kind]['num_episodes'],
              'dataset_mean_return': round(manifests[kind]['mean_return'], 1)}
      rows += [{**base, **e} for e in evals]
      summary.append({**base, 'final_return': round(evals[-1]['mean_return'], 1),
                      'best_return': round(max(e['mean_return'] for e in evals), 1)})
  for name, table in (('offline.csv', rows), ('summary.csv', summary)):
    with open(out / name, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=list(table[0]))
      writer.writeheader()
      writer.writerows(table)
  print(f'{"dataset":8s} {"agent":5s} {"episodes":>8s} {"data return":>11s} {"final":>7s} {"best":>7s}')
  for s in summary:
    print(f'{s["kind"]:8s} {s["agent"]:5s} {s["episodes"]:8d} {s["dataset_mean_return"]:11.1f} '
          f'{s["final_return"]:7.1f} {s["best_return"]:7.1f}')
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.5), squeeze=False)
  for ax, kind in zip(axes[0], kinds):
    for agent in agents:
      pts = [r for r in rows if r['kind'] == kind and r['agent'] == agent]
      ax.plot([r['learner_steps'] for r in pts], [r['mean_return'] for r in pts], marker='o',
              label=agent.upper())
    ax.axhline(manifests[kind]['mean_return'], color='grey', linestyle='--', label='dataset mean')
    ax.set_title(f'{args.task}: {kind} data ({manifests[kind]["num_episodes"]} episodes)')
    ax.set_xlabel('learner steps')
    ax.set_ylabel('evaluation return')
    ax.legend()
  fig.tight_layout()
  fig.savefig(out / 'offline.png', dpi=100)
  print(f'[offline-bench] wrote {out}/offline.csv, summary.csv, offline.png', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
