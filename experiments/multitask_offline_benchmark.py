"""Offline agents on one multi-task dataset of several bodies, scored per task: PAC against
behaviour cloning of the same network (issue 22's benchmark 3), and the generalist against
one model per task (its benchmark 1).

  # Benchmark 3: mixed data, PAC against BC, 3 seeds.
  python -m experiments.multitask_offline_benchmark --source_runs \\
      experiments/results/experts/cartpole_swingup,experiments/results/experts/point_mass_easy \\
      --kind mixed --episodes 20 --agents pac,bc --seeds 0,1,2 --out bench_out/pac_bc
  # Benchmark 1: expert data, the generalist beside a transformer and an MLP BC per task.
  python -m experiments.multitask_offline_benchmark --source_runs ... --kind expert \\
      --min_expert_fraction 0.8 --agents gato,gato_single,bc_single --out bench_out/generalist

The data (experiments.make_dataset, kind --kind): --episodes episodes of each source run's
task (a run directory, or one kept by experiments.keep_policies); for mixed, --poor_fraction
of them poor (--poor_policy: uniformly random actions, or the run's oldest kept checkpoint
with action noise --noise), the rest its newest checkpoint's (sampled, or with --greedy its
greedy actions, as the expert references were measured; --expert_noise S: with Gaussian
noise of scale S on them, stored as executed, or with --expert_labels executed while the
expert's own action is stored). Every episode is tagged with
its task. The agents, each trained offline for --learner_steps:

  pac          the MPO family's Perceiver actor-critic over all tasks in one placed layout
               (agents.common.task_layout: each task's observation groups as tokens, a task
               token, its own action dimensions), PAC with behaviour-cloning weight --bc_alpha
  bc           the same network and data with weight 1: the policy is pure behaviour
               cloning (the MPO term drops out; the critic still trains, and nothing reads
               it), BC of the same size on the same data as the PAC paper compares
  gato         the generalist (agents.gato, cpu preset) over all tasks, conditioned as Gato
               is: a prompt of another episode of the task (at evaluation, the task's best
               stored episode)
  gato_task_id the same with a task-id token instead of the prompt
  gato_single  the same transformer trained on one task's episodes alone, one run a task
               (no conditioning: it knows one task)
  bc_single    an MLP behaviour-cloning policy (agents.bc) of one task, one run a task

--extra_datasets D1,D2,... adds other episode stores made by experiments.make_dataset (such
as DAgger rounds, make_dataset --executor_run) to every run's data: each multi-task run
trains on all of them, each single-task run on those holding its task alone.

The single-task agents train on a dataset of their task alone, made from the same run with
the same seed (the multi-task dataset's episodes of that task), for --single_task_steps
each (default: --learner_steps over the number of tasks, the multi-task model's updates per
task, so that an agent's models together make as many updates as the multi-task one).
With --decay_lr every run's learning rate falls along a cosine to a tenth over that run's
own updates (agents.common.learning_rate): the final checkpoint, which the summary scores,
is then the settled one (experiments/results/pac_bc_multitask/, session 27).
The evaluator runs every task of a run (--eval_episodes greedy episodes each, every
--eval_every learner steps) and scores it against environments/expert_references.json
(0 random, 100 expert).

Writes:
  <out>/dataset/, <out>/single_task_data/<run>/   episode stores (+ manifest.json)
  <out>/runs/<agent>_seed<k>[_<task>]/    each offline run directory
  <out>/multitask_offline.csv      agent, seed, evaluation, learner_steps, updates (of all
                                   the agent's models), task, mean_return, score (task
                                   'mean': the mean over tasks)
  <out>/summary.csv                agent, task, final score per seed, their mean and spread
  <out>/multitask_offline.png      mean score against learner steps; final score per task
Rerunning with the same --out reuses the datasets and finished runs (a dataset only if it
was made with the same --kind, --greedy, --min_expert_fraction, --expert_noise and
--expert_labels; a run only if it trained on the same datasets, --extra_datasets included).
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

MULTI_TASK = ('pac', 'bc', 'gato', 'gato_task_id')
SINGLE_TASK = ('gato_single', 'bc_single')
AGENTS = MULTI_TASK + SINGLE_TASK
FIELDS = (
  'agent', 'seed', 'evaluation', 'learner_steps', 'updates', 'task', 'mean_return', 'score'
)  # fmt: skip


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--source_runs', required=True, help='comma-separated trained runs')
  p.add_argument('--kind', choices=['mixed', 'expert'], default='mixed')
  p.add_argument('--episodes', type=int, default=20, help='per task')
  p.add_argument(
    '--min_expert_fraction',
    type=float,
    default=None,
    help='expert data: keep episodes at or above this fraction of the expert return (0.8)',
  )
  p.add_argument('--poor_fraction', type=float, default=0.5)
  p.add_argument(
    '--poor_policy',
    choices=['random', 'noisy'],
    default='random',
    help='what acts in the poor episodes: uniformly random actions, or the oldest kept '
    'checkpoint with --noise (the kept experts stay near-expert at noise 1.0)',
  )
  p.add_argument('--noise', type=float, default=0.5, help='action noise of noisy poor episodes')
  p.add_argument(
    '--greedy', action='store_true', help='the expert episodes act greedily (else sampled)'
  )
  p.add_argument(
    '--expert_noise',
    type=float,
    default=0.0,
    help="Gaussian noise on the expert episodes' actions (make_dataset --expert_noise)",
  )
  p.add_argument(
    '--expert_labels',
    action='store_true',
    help="with --expert_noise: the noise is executed, the expert's own action stored "
    '(make_dataset --expert_labels; the pac and bc agents skip such episodes)',
  )
  p.add_argument('--learner_steps', type=int, default=6000)
  p.add_argument(
    '--single_task_steps',
    type=int,
    default=None,
    help='updates of each single-task model (default: --learner_steps / tasks)',
  )
  p.add_argument('--eval_every', type=int, default=1500)
  p.add_argument('--eval_episodes', type=int, default=2)
  p.add_argument('--bc_alpha', type=float, default=0.3, help="PAC's behaviour-cloning weight")
  p.add_argument('--agents', default='pac,bc', help=f'comma-separated, of {", ".join(AGENTS)}')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument(
    '--pac_setting',
    action='append',
    default=[],
    help='one more --agent setting for pac and bc (repeatable), e.g. perceiver.blocks=2',
  )
  p.add_argument(
    '--gato_setting',
    action='append',
    default=[],
    help='one more --agent setting for the gato agents (repeatable)',
  )
  p.add_argument(
    '--decay_lr',
    action='store_true',
    help="every run's learning rate decays along a cosine to a tenth over that run's own "
    'updates (lr_decay.steps, or optim.lr_decay.steps for the gato agents; single-task '
    'runs over --single_task_steps)',
  )
  p.add_argument(
    '--extra_datasets',
    default='',
    help='comma-separated episode stores of experiments.make_dataset to train on too '
    '(single-task runs: those of their task alone), e.g. DAgger rounds',
  )
  p.add_argument('--out', default='bench_out/multitask_offline')
  args = p.parse_args(argv)
  args.extras = [pathlib.Path(d).resolve() for d in args.extra_datasets.split(',') if d]
  args.runs = [r for r in args.source_runs.split(',') if r]
  if len(args.runs) < 2:
    p.error('--source_runs: at least two runs (one per task), comma-separated')
  args.agent_list = [a for a in args.agents.split(',') if a]
  if not args.agent_list or set(args.agent_list) - set(AGENTS):
    p.error(f'--agents: a comma-separated list of {", ".join(AGENTS)}, got {args.agents!r}')
  try:
    args.seed_list = [int(s) for s in args.seeds.split(',') if s]
  except ValueError:
    p.error(f'--seeds: comma-separated ints, got {args.seeds!r}')
  for name in ('episodes', 'learner_steps', 'eval_every', 'eval_episodes', 'single_task_steps'):
    if getattr(args, name) is not None and getattr(args, name) < 1:
      p.error(f'--{name} must be at least 1, got {getattr(args, name)}')
  if not args.expert_noise >= 0.0:
    p.error(f'--expert_noise must be a number >= 0, got {args.expert_noise}')
  if args.expert_labels and not args.expert_noise:
    p.error('--expert_labels needs --expert_noise > 0')
  if not 0.0 <= args.bc_alpha < 1.0:
    p.error(f'--bc_alpha must be in [0, 1) (1 is the bc agent), got {args.bc_alpha}')
  return args


def agent_flags(
  agent: str,
  bc_alpha: float,
  pac_settings: Sequence[str] = (),
  gato_settings: Sequence[str] = (),
  decay_steps: int = 0,
) -> List[str]:
  """collect_infer flags of `agent` (see the module's text); `decay_steps` > 0: its
  learning rate decays over that many updates (agents.common.learning_rate)."""

  def agent_settings(settings):
    return [flag for s in settings for flag in ('--agent', s)]

  decay = [f'lr_decay.steps={decay_steps}'] if decay_steps else []
  if agent in ('pac', 'bc'):
    alpha = 1.0 if agent == 'bc' else bc_alpha
    settings = ['network=perceiver', 'policy_loss=pac', f'pac.alpha={alpha}', *decay]
    return agent_settings([*settings, *pac_settings])
  if agent.startswith('gato'):
    conditioning = {'gato': 'prompt', 'gato_task_id': 'task_id', 'gato_single': 'none'}[agent]
    settings = [f'window.conditioning={conditioning}', *['optim.' + d for d in decay]]
    return ['--algorithm', 'gato', *agent_settings([*settings, *gato_settings])]
  if agent == 'bc_single':
    return ['--algorithm', 'bc', *agent_settings(decay)]
  raise ValueError(f'unknown agent {agent!r}; known: {AGENTS}')


def _read(path: pathlib.Path) -> List[Dict[str, str]]:
  with open(path) as f:
    return list(csv.DictReader(f))


def evaluations(run_dirs: Dict[str, pathlib.Path], multi_task: bool) -> List[Dict[str, float]]:
  """Per evaluation and task (and 'mean' over tasks): learner steps, mean return and score.

  `run_dirs`: task -> its run directory; one run of all tasks (`multi_task`: its rows in
  logs/evaluator_<task>/) or one run a task (logs/evaluator/, whose score is mean_score).
  Evaluations are matched across tasks by their order. 'updates' counts those of all the
  agent's models together (one a task when not `multi_task`): its compute.
  """
  from launch.tasks import task_log_label

  rows = []
  for task, run_dir in run_dirs.items():
    label = task_log_label(task) if multi_task else 'evaluator'
    for i, r in enumerate(_read(run_dir / 'logs' / label / 'logs.csv')):
      rows.append(
        {
          'evaluation': i,
          'learner_steps': int(float(r['learner_steps'])),
          'task': task,
          'mean_return': float(r['mean_return']),
          'score': float(r['score' if multi_task else 'mean_score']),
        }
      )
  by_evaluation: Dict[int, List[Dict[str, float]]] = {}
  for r in rows:
    by_evaluation.setdefault(r['evaluation'], []).append(r)
  models = 1 if multi_task else len(run_dirs)
  for i, group in sorted(by_evaluation.items()):
    if len(group) == len(run_dirs):
      rows.append(
        {
          'evaluation': i,
          'learner_steps': min(g['learner_steps'] for g in group),
          'task': 'mean',
          'mean_return': sum(g['mean_return'] for g in group) / len(group),
          'score': sum(g['score'] for g in group) / len(group),
        }
      )
  for r in rows:
    r['updates'] = r['learner_steps'] * models
  return rows


def summarise(rows: Sequence[Dict], agents: Sequence[str], tasks: Sequence[str]) -> List[Dict]:
  """Final score per agent, task (and 'mean') and seed; mean over seeds and spread."""
  out = []
  for agent in agents:
    for task in [*tasks, 'mean']:
      finals = {}
      for r in rows:
        if r['agent'] == agent and r['task'] == task:
          last = finals.get(r['seed'])
          if last is None or r['evaluation'] >= last['evaluation']:
            finals[r['seed']] = r
      if not finals:
        continue
      scores = [finals[s]['score'] for s in sorted(finals)]
      out.append(
        {
          'agent': agent,
          'task': task,
          'seeds': len(scores),
          'final_scores': ' '.join(f'{s:.1f}' for s in scores),
          'mean_score': round(sum(scores) / len(scores), 1),
          'spread': round(max(scores) - min(scores), 1),
        }
      )
  return out


def plot(rows: Sequence[Dict], summary: Sequence[Dict], tasks: Sequence[str], path) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np

  agents = [a for a in AGENTS if any(r['agent'] == a for r in rows)]
  fig, (curve, bars) = plt.subplots(1, 2, figsize=(11, 4))
  for agent in agents:
    seeds = sorted({r['seed'] for r in rows if r['agent'] == agent})
    for seed in seeds:
      pts = [r for r in rows if r['agent'] == agent and r['seed'] == seed and r['task'] == 'mean']
      curve.plot(
        [r['updates'] for r in pts],
        [r['score'] for r in pts],
        marker='o',
        alpha=0.6,
        color=f'C{AGENTS.index(agent)}',
        label=agent if seed == seeds[0] else None,
      )
  curve.set_xlabel('updates (single-task agents: all their models together)')
  curve.set_ylabel('mean expert-normalised score')
  curve.set_title('mean over tasks (one line a seed)')
  curve.legend()
  x = np.arange(len(tasks) + 1)
  width = 0.8 / max(len(agents), 1)
  for i, agent in enumerate(agents):
    by_task = {s['task']: s for s in summary if s['agent'] == agent}
    means = [by_task[t]['mean_score'] if t in by_task else np.nan for t in [*tasks, 'mean']]
    spreads = [by_task[t]['spread'] / 2 if t in by_task else 0 for t in [*tasks, 'mean']]
    bars.bar(
      x + i * width,
      means,
      width,
      yerr=spreads,
      label=agent,
      capsize=3,
      color=f'C{AGENTS.index(agent)}',
    )
  bars.set_xticks(x + width * (len(agents) - 1) / 2)
  bars.set_xticklabels([t.replace(':', '\n') for t in [*tasks, 'mean']], fontsize=8)
  bars.set_ylabel('final score (mean over seeds, bar: range)')
  bars.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _write(path: pathlib.Path, table: Sequence[Dict]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)


def _dataset(args, runs: Sequence[str], where: pathlib.Path, seed: int = 0) -> Dict:
  """The dataset of `runs` at `where`, made (seed `seed`) or kept from an earlier call."""
  from experiments.make_dataset import build_dataset

  if not (where / 'manifest.json').exists():
    print(f'[multitask-offline] building the {args.kind} dataset {where} from {runs}', flush=True)
    build_dataset(
      list(runs),
      args.kind,
      args.episodes,
      str(where),
      poor_fraction=args.poor_fraction,
      noise=args.noise,
      seed=seed,
      poor_policy=args.poor_policy,
      min_expert_fraction=args.min_expert_fraction,
      greedy=args.greedy,
      expert_noise=args.expert_noise,
      expert_labels=args.expert_labels,
    )
  manifest = json.loads((where / 'manifest.json').read_text())
  # A dataset kept from an earlier call is reused only if it was made as this one asks.
  for field, wanted, default in (
    ('kind', args.kind, None),
    ('greedy', args.greedy, False),
    ('min_expert_fraction', args.min_expert_fraction, None),
    ('expert_noise', args.expert_noise, 0.0),
    ('expert_labels', args.expert_labels, False),
    ('seed', seed, 0),
  ):
    if manifest.get(field, default) != wanted:
      raise SystemExit(
        f'error: {where} was made with {field}={manifest.get(field, default)}, not {wanted}; '
        'choose a new --out'
      )
  return manifest


def single_task_datasets(args, where: pathlib.Path) -> Dict[str, pathlib.Path]:
  """task -> a dataset of that source run alone in `where`, holding exactly the multi-task
  dataset's episodes of the task (seeded as make_dataset seeds the run among them)."""
  from experiments.make_dataset import run_seed

  found = {}
  for i, run in enumerate(args.runs):
    path = where / pathlib.Path(run).name
    found[next(iter(_dataset(args, [run], path, seed=run_seed(0, i))['tasks']))] = path
  return found


def extra_datasets_by_task(
  extras: Sequence[pathlib.Path], tasks: Sequence[str], single_task: bool
) -> Dict[str, List[pathlib.Path]]:
  """Each task's extra datasets for its single-task runs (those holding that task alone);
  SystemExit naming --extra_datasets for a dataset without a manifest, of a task not in
  the benchmark, or of several tasks when single-task agents run."""
  found: Dict[str, List[pathlib.Path]] = {task: [] for task in tasks}
  for path in extras:
    if not (path / 'manifest.json').is_file():
      raise SystemExit(
        f'error: --extra_datasets: {path} has no manifest.json (make it with '
        'experiments.make_dataset)'
      )
    held = list(json.loads((path / 'manifest.json').read_text()).get('tasks', {}))
    unknown = [task for task in held if task not in found]
    if unknown or not held:
      raise SystemExit(
        f'error: --extra_datasets: {path} holds {", ".join(unknown) or "no task"}, not tasks '
        f'of this benchmark ({", ".join(tasks)})'
      )
    if len(held) > 1 and single_task:
      raise SystemExit(
        f'error: --extra_datasets: {path} holds several tasks ({", ".join(held)}); the '
        'single-task agents need one task a dataset'
      )
    if len(held) == 1:
      found[held[0]].append(path)
  return found


def _train(
  args,
  agent: str,
  seed: int,
  run_dir: pathlib.Path,
  tasks,
  datasets: Sequence[pathlib.Path],
  steps: int,
  eval_every: int,
) -> None:
  _check_same_data(run_dir, datasets)
  if (run_dir / 'checkpoints').exists() and _finished(run_dir, steps):
    return
  cmd = [
    sys.executable,
    '-m',
    'experiments.collect_infer',
    *('--run_dir', str(run_dir), '--task', tasks[0]),
    *(('--tasks', ','.join(tasks)) if len(tasks) > 1 else ()),
    *('--mode', 'offline', '--datasets', *map(str, datasets)),
    *('--max_learner_steps', str(steps)),
    *('--eval_every_learner_steps', str(eval_every), '--eval_every_seconds', '100000'),
    *('--eval_episodes', str(args.eval_episodes), '--seed', str(seed), '--no_eval_gifs'),
    *agent_flags(
      agent, args.bc_alpha, args.pac_setting, args.gato_setting, steps if args.decay_lr else 0
    ),
  ]
  print(f'[multitask-offline] {agent} seed {seed}: {" ".join(cmd[2:])}', flush=True)
  subprocess.run(cmd, check=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from launch.tasks import task_log_label

  out = pathlib.Path(args.out).resolve()
  manifest = _dataset(args, args.runs, out / 'dataset')
  tasks = list(manifest['tasks'])  # In the source runs' order.
  print(f'[multitask-offline] dataset: {manifest["num_episodes"]} episodes of {tasks}', flush=True)
  extras = extra_datasets_by_task(
    args.extras, tasks, any(a in SINGLE_TASK for a in args.agent_list)
  )
  if args.extras:
    print(f'[multitask-offline] and the extra datasets {[str(d) for d in args.extras]}', flush=True)
  task_runs = {}
  if any(a in SINGLE_TASK for a in args.agent_list):
    task_runs = single_task_datasets(args, out / 'single_task_data')
  single_steps = args.single_task_steps or max(1, args.learner_steps // len(tasks))
  # As many evaluations as the multi-task runs make.
  single_eval_every = max(1, args.eval_every * single_steps // args.learner_steps)
  rows: List[Dict] = []
  for agent in args.agent_list:
    for seed in args.seed_list:
      name = f'{agent}_seed{seed}'
      if agent in MULTI_TASK:
        _train(
          args,
          agent,
          seed,
          out / 'runs' / name,
          tasks,
          [out / 'dataset', *args.extras],
          args.learner_steps,
          args.eval_every,
        )
        run_dirs = {task: out / 'runs' / name for task in tasks}
      else:
        run_dirs = {
          t: out / 'runs' / f'{name}_{task_log_label(t)[len("evaluator_") :]}' for t in tasks
        }
        for task, run_dir in run_dirs.items():
          data = [task_runs[task], *extras[task]]
          _train(args, agent, seed, run_dir, [task], data, single_steps, single_eval_every)
      rows += [
        {'agent': agent, 'seed': seed, **r}
        for r in evaluations(run_dirs, multi_task=agent in MULTI_TASK)
      ]
  rows = [{k: r[k] for k in FIELDS} for r in rows]
  summary = summarise(rows, args.agent_list, tasks)
  _write(out / 'multitask_offline.csv', rows)
  _write(out / 'summary.csv', summary)
  plot(rows, summary, tasks, out / 'multitask_offline.png')
  print(f'{"agent":11s} {"task":20s} {"mean":>6s} {"spread":>6s}  per seed')
  for s in summary:
    print(
      f'{s["agent"]:11s} {s["task"]:20s} {s["mean_score"]:6.1f} {s["spread"]:6.1f}  '
      f'{s["final_scores"]}'
    )
  print(f'[multitask-offline] wrote {out}/multitask_offline.csv, summary.csv, .png', flush=True)
  return 0


def _check_same_data(run_dir: pathlib.Path, datasets: Sequence[pathlib.Path]) -> None:
  """SystemExit when a run kept from an earlier call (finished or not) trained on other
  datasets than this call gives it: reusing or resuming it would report other data."""
  config = run_dir / 'config.json'
  if not config.is_file():
    return
  had = sorted(os.path.abspath(d) for d in json.loads(config.read_text()).get('datasets', []))
  wanted = sorted(os.path.abspath(d) for d in datasets)
  if had != wanted:
    extra = sorted(set(wanted) - set(had)) or sorted(set(had) - set(wanted))
    raise SystemExit(
      f'error: {run_dir} was trained on other datasets than this call gives it (differing: '
      f'{", ".join(extra)}); choose a new --out, or --extra_datasets as before'
    )


def _finished(run_dir: pathlib.Path, learner_steps: int) -> bool:
  from launch.checkpointing import Checkpointer

  latest = Checkpointer(run_dir / 'checkpoints', read_pickles=False).all_steps()
  return bool(latest) and max(latest) >= learner_steps


if __name__ == '__main__':
  sys.exit(main())
