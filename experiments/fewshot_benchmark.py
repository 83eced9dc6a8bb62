"""Few-shot learning of a held-out task: the generalist pre-trained on other tasks against the
same transformer trained from scratch, fine-tuned on 10, 50 and 100 expert episodes of the
held-out task (issue 22's benchmark 2).

  python -m experiments.fewshot_benchmark \\
      --pretrain_runs experiments/results/experts/cartpole_swingup,...  \\
      --heldout_run experiments/results/experts/point_mass_easy --greedy \\
      --shots 10,50,100 --seeds 0,1,2 --out bench_out/fewshot

Data (experiments.make_dataset, expert episodes; --greedy: the experts act greedily):
--episodes of each pre-training run's task (kept at >= --min_expert_fraction of the task's
expert return), and the held-out run's first max(--shots) episodes (another seed), of which
each k-shot store holds the first k.

Runs (experiments.collect_infer --algorithm gato, offline), all over the same --tasks (the
pre-training tasks and the held-out one), so that every run has the same network: a run
learns from the tasks whose episodes it is given and evaluates all of them.

  pretrain     --pretrain_steps on the pre-training data (the held-out task is evaluated
               too: its zero-shot score);
  pretrained   for each k and seed: --finetune_steps on the k-shot store, from the
               pre-trained checkpoint (--init_checkpoint: parameters and optimiser; the
               step count starts afresh);
  scratch      the same from fresh parameters.

The evaluator prompts the held-out task with the best of the episodes the run is given (the
k-shot store), as Gato is evaluated. Scores are expert-normalised (0 random, 100 expert;
environments/expert_references.json).

Writes:
  <out>/pretrain_data/, <out>/heldout_data/, <out>/shots_<k>/   episode stores
  <out>/runs/pretrain/, <out>/runs/<pretrained|scratch>_<k>shots_seed<s>/
  <out>/fewshot.csv     variant, shots, seed, evaluation, learner_steps, mean_return, score
  <out>/summary.csv     variant, shots, final score per seed, their mean and spread, and
                        pretrained over scratch
  <out>/fewshot.png     final score against shots, both variants (bars: range over seeds)
Rerunning with the same --out reuses the datasets and finished runs.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from experiments.multitask_offline_benchmark import _finished, _write  # noqa: E402

FIELDS = ('variant', 'shots', 'seed', 'evaluation', 'learner_steps', 'mean_return', 'score')
VARIANTS = ('pretrained', 'scratch')


def _ints(p: argparse.ArgumentParser, flag: str, text: str) -> List[int]:
  try:
    values = [int(v) for v in text.split(',') if v]
  except ValueError:
    values = []
  if not values or any(v < 0 for v in values):
    p.error(f'{flag}: comma-separated ints >= 0, got {text!r}')
  return values


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--pretrain_runs', required=True, help='comma-separated expert runs')
  p.add_argument('--heldout_run', required=True, help='the expert run of the held-out task')
  p.add_argument('--shots', default='10,50,100', help='held-out episodes to fine-tune on')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--episodes', type=int, default=30, help='per pre-training task')
  p.add_argument('--min_expert_fraction', type=float, default=0.8)
  p.add_argument('--greedy', action='store_true', help='the experts act greedily')
  p.add_argument('--pretrain_steps', type=int, default=12000)
  p.add_argument('--finetune_steps', type=int, default=2000)
  p.add_argument('--eval_every', type=int, default=500, help='learner steps (fine-tuning)')
  p.add_argument('--eval_episodes', type=int, default=2)
  p.add_argument(
    '--gato_setting', action='append', default=[], help='one more --agent setting (repeatable)'
  )
  p.add_argument('--out', default='bench_out/fewshot')
  args = p.parse_args(argv)
  args.pretrain_list = [r for r in args.pretrain_runs.split(',') if r]
  if not args.pretrain_list:
    p.error('--pretrain_runs: at least one run')
  if args.heldout_run in args.pretrain_list:
    p.error('--heldout_run is one of --pretrain_runs: hold out a task not pre-trained on')
  args.shot_list = sorted(set(_ints(p, '--shots', args.shots)))
  if 0 in args.shot_list:
    p.error('--shots: at least 1 episode each (the pre-trained run scores zero-shot)')
  args.seed_list = _ints(p, '--seeds', args.seeds)
  for name in ('episodes', 'pretrain_steps', 'finetune_steps', 'eval_every', 'eval_episodes'):
    if getattr(args, name) < 1:
      p.error(f'--{name} must be at least 1, got {getattr(args, name)}')
  return args


def run_flags(
  tasks: Sequence[str],
  heldout: str,
  dataset: pathlib.Path,
  steps: int,
  eval_every: int,
  eval_episodes: int,
  seed: int,
  settings: Sequence[str] = (),
  init: Optional[pathlib.Path] = None,
) -> List[str]:
  """collect_infer flags of one run: every run names the same tasks (the same network)."""
  return [
    *('--algorithm', 'gato', '--task', heldout, '--tasks', ','.join(tasks)),
    *('--mode', 'offline', '--datasets', str(dataset), '--max_learner_steps', str(steps)),
    *('--eval_every_learner_steps', str(eval_every), '--eval_every_seconds', '100000'),
    *('--eval_episodes', str(eval_episodes), '--seed', str(seed), '--no_eval_gifs'),
    *(('--init_checkpoint', str(init)) if init is not None else ()),
    *[flag for s in settings for flag in ('--agent', s)],
  ]


def first_episodes(source: pathlib.Path, out: pathlib.Path, count: int) -> int:
  """A store at `out` with the first `count` episodes of the store at `source` (in the
  order they were stored); returns how many it holds."""
  from launch.store.episodes import EpisodeStore

  if (out / 'manifest.json').exists():
    return json.loads((out / 'manifest.json').read_text())['num_episodes']
  store = EpisodeStore(source)
  infos = store.index()[:count]
  target = EpisodeStore(out)
  with target.writer('fewshot') as writer:
    for info in infos:
      writer.append(store.read(info.episode_id))
  manifest = {'from': str(source), 'num_episodes': len(infos)}
  (out / 'manifest.json').write_text(json.dumps(manifest, indent=1))
  return len(infos)


def summarise(rows: Sequence[Dict]) -> List[Dict]:
  """Per variant and shot count: the final score of each seed, mean, spread; and the
  pre-trained mean over scratch's."""
  finals: Dict[tuple, Dict[int, Dict]] = {}
  for r in rows:
    key = (r['variant'], r['shots'])
    last = finals.setdefault(key, {}).get(r['seed'])
    if last is None or r['evaluation'] >= last['evaluation']:
      finals[key][r['seed']] = r
  out = []
  for (variant, shots), by_seed in sorted(finals.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    scores = [by_seed[s]['score'] for s in sorted(by_seed)]
    out.append(
      {
        'variant': variant,
        'shots': shots,
        'seeds': len(scores),
        'final_scores': ' '.join(f'{s:.1f}' for s in scores),
        'mean_score': round(sum(scores) / len(scores), 1),
        'spread': round(max(scores) - min(scores), 1),
      }
    )
  means = {(s['variant'], s['shots']): s['mean_score'] for s in out}
  for s in out:
    scratch = means.get(('scratch', s['shots']))
    ratio = s['mean_score'] / scratch if s['variant'] == 'pretrained' and scratch else None
    s['over_scratch'] = None if ratio is None else round(ratio, 2)
  return out


def plot(summary: Sequence[Dict], zero_shot: Optional[float], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np

  shots = sorted({s['shots'] for s in summary})
  x = np.arange(len(shots))
  fig, ax = plt.subplots(figsize=(7, 4))
  for i, variant in enumerate(VARIANTS):
    by = {s['shots']: s for s in summary if s['variant'] == variant}
    ax.bar(
      x + (i - 0.5) * 0.38,
      [by[k]['mean_score'] if k in by else np.nan for k in shots],
      0.38,
      yerr=[by[k]['spread'] / 2 if k in by else 0 for k in shots],
      capsize=3,
      label=variant,
    )
  if zero_shot is not None:
    ax.axhline(zero_shot, color='grey', linestyle='--', label='pre-trained, zero-shot')
  ax.set_xticks(x)
  ax.set_xticklabels([f'{k} episodes' for k in shots])
  ax.set_ylabel('final expert-normalised score (bar: range over seeds)')
  ax.set_title('the held-out task after fine-tuning')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _train(run_dir: pathlib.Path, steps: int, flags: Sequence[str]) -> None:
  if (run_dir / 'checkpoints').exists() and _finished(run_dir, steps):
    return
  cmd = [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', str(run_dir), *flags]
  print(f'[fewshot] {" ".join(cmd[2:])}', flush=True)
  subprocess.run(cmd, check=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from experiments.make_dataset import build_dataset
  from experiments.multitask_offline_benchmark import evaluations

  out = pathlib.Path(args.out).resolve()
  data = {'pretrain': out / 'pretrain_data', 'heldout': out / 'heldout_data'}
  for name, runs, episodes, seed in (
    ('pretrain', args.pretrain_list, args.episodes, 0),
    ('heldout', [args.heldout_run], max(args.shot_list), 1),
  ):
    if not (data[name] / 'manifest.json').exists():
      print(f'[fewshot] building the {name} dataset {data[name]}', flush=True)
      build_dataset(
        runs,
        'expert',
        episodes,
        str(data[name]),
        seed=seed,
        min_expert_fraction=args.min_expert_fraction if name == 'pretrain' else None,
        greedy=args.greedy,
      )
  pretrain_tasks = list(json.loads((data['pretrain'] / 'manifest.json').read_text())['tasks'])
  (heldout,) = json.loads((data['heldout'] / 'manifest.json').read_text())['tasks']
  tasks = [*pretrain_tasks, heldout]
  common = dict(eval_episodes=args.eval_episodes, settings=args.gato_setting)
  pretrain_dir = out / 'runs' / 'pretrain'
  _train(
    pretrain_dir,
    args.pretrain_steps,
    run_flags(
      tasks,
      heldout,
      data['pretrain'],
      args.pretrain_steps,
      max(1, args.pretrain_steps // 4),
      seed=0,
      **common,
    ),
  )
  zero = [r for r in evaluations({heldout: pretrain_dir}, True) if r['task'] == heldout]
  zero_shot = zero[-1]['score'] if zero else None
  print(f'[fewshot] pre-trained, zero-shot on {heldout}: score {zero_shot}', flush=True)
  rows: List[Dict] = []
  for shots in args.shot_list:
    store = out / f'shots_{shots}'
    held = first_episodes(data['heldout'], store, shots)
    if held < shots:
      print(f'[fewshot] {heldout}: {held} episodes for {shots} shots', flush=True)
    for seed in args.seed_list:
      for variant in VARIANTS:
        run_dir = out / 'runs' / f'{variant}_{shots}shots_seed{seed}'
        init = pretrain_dir if variant == 'pretrained' else None
        flags = run_flags(
          tasks,
          heldout,
          store,
          args.finetune_steps,
          args.eval_every,
          seed=seed,
          init=init,
          **common,
        )
        _train(run_dir, args.finetune_steps, flags)
        rows += [
          {'variant': variant, 'shots': shots, 'seed': seed, **r}
          for r in evaluations({heldout: run_dir}, True)
          if r['task'] == heldout
        ]
  rows = [{k: r[k] for k in FIELDS} for r in rows]
  summary = summarise(rows)
  _write(out / 'fewshot.csv', rows)
  _write(out / 'summary.csv', summary)
  plot(summary, zero_shot, out / 'fewshot.png')
  for s in summary:
    extra = f'  {s["over_scratch"]}x scratch' if s['over_scratch'] is not None else ''
    print(
      f'{s["variant"]:10s} {s["shots"]:4d} shots: {s["mean_score"]:6.1f} '
      f'(spread {s["spread"]:.1f}; {s["final_scores"]}){extra}'
    )
  print(f'[fewshot] wrote {out}/fewshot.csv, summary.csv, fewshot.png', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
