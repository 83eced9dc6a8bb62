"""Few-shot and zero-shot transfer of a dynamics model to a held-out physics variant.

  python -m experiments.transfer_benchmark --run_dir runs/cartpole_swingup \\
      --out bench_out/transfer

The data, all made by the project's own actors: the MPO policy of --run_dir acts on each
--pretrain variant of --task (experiments.make_dataset --act_on; --pretrain_episodes each,
half of them its oldest kept checkpoint with action noise, half its final policy) and on
the --heldout variant (--heldout_episodes of its final, stochastic policy; --heldout_kind
random for uniformly random actions instead, data that shows little of the task). For each seed:

  pretrained   a dynamics model (--model) trained on every pretraining variant at once
               for --pretrain_steps: the generalist;
  zero_shot    it, planning on the held-out variant untouched (issue 23's benchmark 3);
  finetuned    it, trained on k held-out episodes for --finetune_steps more, for each k
               of --shots (benchmark 2); with --finetune_mix F, a fraction F of every
               fine-tuning batch is pre-training data (rehearsal; 0 by default);
  scratch      the same model trained on those k episodes alone, for --scratch_steps
               (by default --pretrain_steps + --finetune_steps: as many updates as the
               finetuned model had);
  bc_zero_shot a behaviour-cloning policy trained on the pretraining data, and
  bc_finetuned that policy trained on the k episodes for --finetune_steps more (and the
               same --finetune_mix): a policy pre-trained and fine-tuned on the same data
               as the model.

Models plan with --planner ('method:reward', as planning_benchmark) and --agent settings
(planner.action_repeat=8 by default: cartpole needs about 1 s of lookahead); policies act
greedily. Each plays --eval_episodes on the held-out variant.

Writes:
  <out>/data/<variant>/  the episode stores with their manifests (reused when present)
  <out>/transfer.csv     seed, method, shots, episode, return, train_steps, transitions
                         (a row as each episode ends)
  <out>/transfer.png     return against held-out episodes, each method's mean and range
  <out>/summary.csv      per shots: finetuned's mean return over scratch's and over
                         bc_finetuned's (issue 23's targets: 1.3 and above 1)
"""

import argparse
import csv
import json
import os
import pathlib
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402
from acme.utils import loggers  # noqa: E402

from experiments import transitions  # noqa: E402
from experiments.planning_benchmark import play  # noqa: E402
from launch.cli import agent_setting, require_positive  # noqa: E402

FIELDS = ('seed', 'method', 'shots', 'episode', 'return', 'train_steps', 'transitions')
MODEL_METHODS = ('zero_shot', 'finetuned', 'scratch')
POLICY_METHODS = ('bc_zero_shot', 'bc_finetuned')
PROGRESS_SECONDS = 30.0


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--run_dir', required=True, help='an MPO run of --task: its policy makes the data')
  p.add_argument('--task', default='cartpole:swingup')
  p.add_argument(
    '--pretrain',
    default='pole_length=0.4;pole_length=0.8;pole_length=1.0;pole_length=1.2',
    help="';'-separated variant settings of --task to pre-train on (at least 4 for issue 23)",
  )
  p.add_argument('--heldout', default='pole_length=0.6', help='the held-out variant')
  p.add_argument('--pretrain_episodes', type=int, default=10, help='per pretraining variant')
  p.add_argument('--heldout_episodes', type=int, default=5)
  p.add_argument(
    '--heldout_kind',
    default='expert',
    choices=('expert', 'mixed', 'random'),
    help="what acts in the held-out episodes (make_dataset's --kind): the run's final policy, "
    'half of them its oldest checkpoint with noise, or uniformly random actions',
  )
  p.add_argument('--shots', default='1,2,5', help='held-out episodes to fine-tune on')
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--model', default='ensemble', choices=('ensemble', 'transformer'))
  p.add_argument('--planner', default='cem:learned')
  p.add_argument('--pretrain_steps', type=int, default=5000)
  p.add_argument('--finetune_steps', type=int, default=1000)
  p.add_argument(
    '--finetune_mix',
    type=float,
    default=0.0,
    help='fraction of each fine-tuning batch drawn from the pre-training data, in [0, 1)',
  )
  p.add_argument(
    '--scratch_steps',
    type=int,
    default=None,
    help='updates of the model trained from scratch (default: pretrain + finetune steps)',
  )
  p.add_argument('--eval_episodes', type=int, default=1)
  p.add_argument('--preset', default='cpu')
  p.add_argument(
    '--agent',
    action='append',
    default=[],
    type=agent_setting,
    help='FIELD=VALUE for the planning agent, as collect_infer (default planner.action_repeat=8)',
  )
  p.add_argument('--out', default='bench_out/transfer')
  args = p.parse_args(argv)
  from environments.suite import VARIANT_SEPARATOR as sep
  from environments.suite import parse_task

  args.pretrain_tasks = [f'{args.task}{sep}{v.strip()}' for v in args.pretrain.split(';') if v]
  args.heldout_task = f'{args.task}{sep}{args.heldout}'
  for task in args.pretrain_tasks + [args.heldout_task]:
    try:
      parse_task(task)
    except ValueError as e:
      p.error(f'{task}: {e}')
  if args.heldout_task in args.pretrain_tasks:
    p.error(f'--heldout {args.heldout} is also a --pretrain variant')
  if args.scratch_steps is None:
    args.scratch_steps = args.pretrain_steps + args.finetune_steps
  require_positive(
    p, args, ('pretrain_steps', 'finetune_steps', 'scratch_steps', 'seeds', 'eval_episodes')
  )
  if not 0.0 <= args.finetune_mix < 1.0:
    p.error(f'--finetune_mix must be in [0, 1), got {args.finetune_mix}')
  args.shot_list = sorted({int(k) for k in args.shots.split(',')})
  if not args.shot_list or args.shot_list[0] < 1 or args.shot_list[-1] > args.heldout_episodes:
    p.error(f'--shots must be between 1 and --heldout_episodes ({args.heldout_episodes})')
  from agents.common.errors import ConfigError
  from agents.planning.config import PlanningConfig

  method, _, reward = args.planner.partition(':')
  args.planner_settings = {'planner.method': method, 'planner.reward': reward or 'learned'}
  try:  # Checked before any work: a typo fails now, not after the data is made.
    PlanningConfig.from_dict(args.planner_settings)
  except ConfigError as e:
    p.error(f'--planner {args.planner!r}: {e}')
  if not any(key == 'planner.action_repeat' for key, _ in args.agent):
    args.agent.insert(0, ('planner.action_repeat', 8))
  return args


def _slug(task: str) -> str:
  return ''.join(c if c.isalnum() or c in '.-' else '_' for c in task)


def _dataset(args, task: str, kind: str, episodes: int, seed: int) -> str:
  """The store of `episodes` episodes of the run's policy on `task`, made once."""
  from experiments.make_dataset import build_dataset

  path = pathlib.Path(args.out) / 'data' / _slug(task)
  manifest_path = path / 'manifest.json'
  if manifest_path.exists():
    manifest = json.loads(manifest_path.read_text())
    if manifest['num_episodes'] >= episodes and manifest['kind'] == kind:
      print(f'[data] {task}: {manifest["num_episodes"]} episodes already in {path}', flush=True)
      return str(path)
    raise SystemExit(f'{path} holds other data ({manifest["kind"]}); choose a new --out')
  manifest = build_dataset(
    args.run_dir, kind, episodes, str(path), poor_fraction=0.5, seed=seed, act_on=task
  )
  print(
    f'[data] {task}: {episodes} {kind} episodes, mean return {manifest["mean_return"]:.1f}',
    flush=True,
  )
  return str(path)


def _train(learner, logged: loggers.InMemoryLogger, steps: int, label: str) -> None:
  start = last = time.time()
  for step in range(1, steps + 1):
    learner.step()
    if time.time() - last >= PROGRESS_SECONDS or step == steps:
      last = time.time()
      losses = ', '.join(f'{k} {logged.data[-1][k]:.3f}' for k in learner.loss_names)
      print(f'  {label}: step {step}/{steps}, {losses}, {last - start:.0f} s', flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  import jax
  from acme import specs, wrappers

  from agents import registry
  from agents.common.config import merge_overrides
  from agents.common.errors import UserError
  from environments.suite import make_environment

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  try:
    pretrain_stores = [
      _dataset(args, task, 'mixed', args.pretrain_episodes, i)
      for i, task in enumerate(args.pretrain_tasks)
    ]
    heldout_store = _dataset(args, args.heldout_task, args.heldout_kind, args.heldout_episodes, 100)
  except UserError as e:  # No run there, a run of other specs: one line, not a traceback.
    print(f'error: {e}', file=sys.stderr)
    return 2
  pretrain = transitions.concatenate([transitions.store_transitions(s) for s in pretrain_stores])
  shots = {k: transitions.store_transitions(heldout_store, limit=k) for k in args.shot_list}
  print(
    f'pre-training data: {len(pretrain["reward"])} transitions of '
    f'{len(args.pretrain_tasks)} variants; held-out: {args.heldout_task}',
    flush=True,
  )

  spec = specs.make_environment_spec(make_environment(args.heldout_task, seed=0))

  def env_factory(seed: int):
    env = make_environment(args.heldout_task, seed=seed)
    return wrappers.StepLimitWrapper(env, step_limit=1000)

  def make_builder(algorithm: str, settings: List[Dict[str, Any]]):
    entry = registry.get(algorithm)
    values = merge_overrides(entry.config_class, entry.preset(args.preset), *settings)
    return entry.make_builder(entry.config_class.from_dict(values), spec)

  planning = make_builder(
    'planning',
    [{'model.kind': args.model}, args.planner_settings, *({k: v} for k, v in args.agent)],
  )
  bc = make_builder('bc', [])

  rows: List[Dict[str, Any]] = []
  csv_file = open(out / 'transfer.csv', 'w', newline='')
  writer = csv.DictWriter(csv_file, fieldnames=FIELDS)
  writer.writeheader()

  def evaluate(builder, learner, seed: int, method: str, shots: int, steps: int, n: int):
    for row in play(builder, learner, env_factory, args.eval_episodes, seed, f'{method} k={shots}'):
      row = {
        'seed': seed, 'method': method, 'shots': shots, 'episode': row['episode'],
        'return': row['return'], 'train_steps': steps, 'transitions': n,
      }  # fmt: skip
      rows.append(row)
      writer.writerow(row)
      csv_file.flush()
      print(f'seed {seed} {method} k={shots}: return {row["return"]:.1f}', flush=True)

  def learner_on(builder, data, seed: int, state=None, mix=None):
    logged = loggers.InMemoryLogger()  # For the progress line's losses.
    size = builder.config.replay.batch_size
    batches = transitions.batches(data, size, seed, mix=mix, mix_fraction=args.finetune_mix)
    learner = builder.make_learner(batches, seed=seed, logger=logged)
    if state is not None:
      learner.restore(state)
    return learner, logged

  n_pre = len(pretrain['reward'])
  for seed in range(args.seeds):
    arms = ((planning, 'zero_shot', 'finetuned'), (bc, 'bc_zero_shot', 'bc_finetuned'))
    for builder, zero, tuned in arms:
      base, logged = learner_on(builder, pretrain, seed)
      _train(base, logged, args.pretrain_steps, f'seed {seed} {zero} pre-training')
      evaluate(builder, base, seed, zero, 0, args.pretrain_steps, n_pre)
      state = jax.device_get(base.save())
      for k, data in shots.items():
        learner, logged = learner_on(builder, data, seed, state, mix=pretrain)
        _train(learner, logged, args.finetune_steps, f'seed {seed} {tuned} k={k}')
        steps = args.pretrain_steps + args.finetune_steps
        evaluate(builder, learner, seed, tuned, k, steps, n_pre + len(data['reward']))
    for k, data in shots.items():
      learner, logged = learner_on(planning, data, seed)
      steps = args.scratch_steps
      _train(learner, logged, steps, f'seed {seed} scratch k={k}')
      evaluate(planning, learner, seed, 'scratch', k, steps, len(data['reward']))
  csv_file.close()
  summary = _summary(rows, args.shot_list)
  with open(out / 'summary.csv', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(summary[0]))
    w.writeheader()
    w.writerows(summary)
  for s in summary:
    print(
      f'k={s["shots"]}: finetuned {s["finetuned"]:.1f}, scratch {s["scratch"]:.1f}, '
      f'bc_finetuned {s["bc_finetuned"]:.1f}; finetuned / scratch {s["over_scratch"]:.2f} '
      f'(target 1.3), / bc_finetuned {s["over_bc"]:.2f} (target > 1)',
      flush=True,
    )
  _plot(rows, args, out / 'transfer.png')
  print(f'wrote {out / "transfer.csv"}, {out / "summary.csv"} and {out / "transfer.png"}')
  return 0


def _mean(rows, method: str, shots: int) -> float:
  values = [r['return'] for r in rows if r['method'] == method and r['shots'] == shots]
  return float(np.mean(values)) if values else float('nan')


def _summary(rows: List[Dict[str, Any]], shot_list: Sequence[int]) -> List[Dict[str, Any]]:
  """Per shots, each method's mean return and finetuned's ratios to the baselines."""
  out = []
  for k in shot_list:
    s = {'shots': k, **{m: _mean(rows, m, k) for m in ('finetuned', 'scratch', 'bc_finetuned')}}
    s['zero_shot'], s['bc_zero_shot'] = _mean(rows, 'zero_shot', 0), _mean(rows, 'bc_zero_shot', 0)
    s['over_scratch'] = s['finetuned'] / max(s['scratch'], 1e-6)
    s['over_bc'] = s['finetuned'] / max(s['bc_finetuned'], 1e-6)
    out.append(s)
  return out


def _plot(rows: List[Dict[str, Any]], args, path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.5))
  ks = args.shot_list
  for method in ('finetuned', 'scratch', 'bc_finetuned'):
    per_k = [[r['return'] for r in rows if r['method'] == method and r['shots'] == k] for k in ks]
    mean = [np.mean(v) for v in per_k]
    ax.plot(ks, mean, marker='o', label=method)
    ax.fill_between(ks, [min(v) for v in per_k], [max(v) for v in per_k], alpha=0.2)
  for method, style in (('zero_shot', '--'), ('bc_zero_shot', ':')):
    ax.axhline(_mean(rows, method, 0), linestyle=style, color='gray', label=method)
  ax.set_xlabel('held-out episodes trained on')
  ax.set_ylabel('return on the held-out variant')
  ax.set_xticks(ks)
  ax.set_title(f'{args.model} model, {args.heldout_task}, {args.seeds} seeds', fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == '__main__':
  raise SystemExit(main())
