"""Evaluates a run's kept checkpoints again, over more greedy episodes than it had.

The evaluator scores a few episodes while the run trains; where a task's returns vary by
episode (reacher's target, a swing-up that sometimes fails), a curve from 3 episodes
is mostly noise. This plays N greedy episodes a task with each kept checkpoint (or the
ones named), exactly as the evaluator acts (the run's builder and actor, prompted from
the run's data where the agent takes prompts), and writes a row per checkpoint and task:
raw returns and, where a reference exists, the expert-normalised score.

  python -m experiments.evaluate_checkpoints --run_dir runs/gato --episodes 10 \\
      --out runs/gato/evaluations_10.csv
  python -m experiments.evaluate_checkpoints --run_dir runs/gato --steps 6000,12000 \\
      --tasks cartpole:swingup --agent model.greedy_decoding=argmax

--agent changes a setting of how the agent acts (not of its network's shapes) for these
episodes only; the run's config.json stays as it is.

Episode k of a task plays on a fresh environment of seed `--seed` + k, so every
checkpoint meets the same N starts. The run's files are read as another run's: its
config.json is checked as any config and its checkpoints are read without pickles.
"""

import argparse
import csv
import os
import pathlib
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

FIELDS = (
  'learner_steps',
  'task',
  'episodes',
  'mean_return',
  'min_return',
  'max_return',
  'score',
  'returns',
)


def prompt_as_the_evaluator(actor: Any, stores: Sequence[pathlib.Path], task: str) -> None:
  """Prompts an actor that takes prompts as the evaluator does: the task's best stored
  episode in the run's data."""
  from launch.store.windows import best_demonstrations

  found = best_demonstrations(list(stores), [task]).get(task)
  if found is None:
    print(f'[evaluate] no stored episode of {task} to prompt with', flush=True)
    return
  episode, episode_return = found
  actor.use_demonstration(episode.observations, episode.actions, episode_return)


def _with_settings(config: Dict[str, Any], settings: Sequence[Tuple[str, Any]]) -> Dict:
  """The run's config dict with agent settings replaced (checked when it is read)."""
  from agents.common.errors import ConfigError

  for field, value in settings:
    node = config['agent']
    *parents, name = field.split('.')
    for parent in parents:
      node = node.get(parent) if isinstance(node, dict) else None
    if not isinstance(node, dict) or name not in node:
      raise ConfigError(f"agent setting {field}: not a setting of this run's agent")
    node[name] = value
  return config


def evaluate_checkpoints(
  run_dir: str,
  episodes: int,
  steps: Optional[Sequence[int]] = None,
  tasks: Optional[Sequence[str]] = None,
  seed: int = 100,
  on_row: Callable[[Dict[str, Any]], None] = lambda row: None,
  agent_settings: Sequence[Tuple[str, Any]] = (),
) -> List[Dict[str, Any]]:
  """Rows (FIELDS) of `episodes` greedy episodes a task for each checkpoint of `steps`
  (default: every kept one) and task of `tasks` (default: the run's); a run of several
  tasks adds a row of task 'mean' a checkpoint (mean over tasks). `on_row` sees each row
  as it is made; `agent_settings` are (dotted field, value) changes of the run's agent
  settings. ConfigError naming the argument on a bad run, step, task or setting."""
  import acme
  import numpy as np
  from acme.utils import loggers

  from agents.common.errors import ConfigError
  from agents.variable_client import FixedVariables, acting_params
  from environments.references import references, score_tasks
  from launch import experiment
  from launch.checkpointing import Checkpointer
  from launch.config import ExperimentConfig
  from launch.run_dir import RunDir

  if episodes < 1:
    raise ConfigError(f'episodes must be at least 1, got {episodes}')
  rd = RunDir(os.path.abspath(run_dir))
  if not rd.exists():
    raise ConfigError(f'run_dir {run_dir} is not a run directory (no config.json)')
  cfg = ExperimentConfig.from_dict(_with_settings(rd.read_config(), agent_settings))
  ckpt = Checkpointer(rd.checkpoints, read_pickles=False)
  kept = ckpt.all_steps()
  if not kept:
    raise ConfigError(f'run_dir {run_dir} has no checkpoint')
  missing = sorted(set(steps or ()) - set(kept))
  if missing:
    raise ConfigError(f'steps: {missing} not kept in {run_dir} (kept: {kept})')
  unknown = sorted(set(tasks or ()) - set(cfg.task_names))
  if unknown:
    raise ConfigError(f'tasks: {unknown} not tasks of {run_dir} ({list(cfg.task_names)})')
  tasks = list(tasks or cfg.task_names)
  # The run may have moved since it ran: its own store is where it is now.
  stores = [rd.store] + [pathlib.Path(d) for d in cfg.datasets]
  # One actor a task (compiled and prompted once), each checkpoint's parameters served in
  # turn, as the evaluator's actors fetch the learner's.
  source = FixedVariables(None)
  actors = {}
  for task in tasks:
    actors[task] = experiment.make_builder(cfg, task).make_actor(
      source, adder=None, seed=cfg.seed, deterministic=True
    )
    if hasattr(actors[task], 'use_demonstration'):
      prompt_as_the_evaluator(actors[task], stores, task)
  rows = []
  start = time.time()
  for step in sorted(steps or kept):
    source.params = acting_params(ckpt.restore(step)['learner_state'])
    returns = {}
    for task, actor in actors.items():
      actor.update(wait=True)
      returns[task] = []
      for k in range(episodes):
        env = experiment.make_env(cfg, seed=seed + k, task=task)
        loop = acme.EnvironmentLoop(
          env, actor, should_update=False, logger=loggers.NoOpLogger(), label='evaluate'
        )
        returns[task].append(float(loop.run_episode()['episode_return']))
    summary = score_tasks(returns, references())
    for task in tasks:
      row = {
        'learner_steps': step,
        'task': task,
        'episodes': episodes,
        **{k: summary['tasks'][task][k] for k in ('mean_return', 'min_return', 'max_return')},
        'score': summary['tasks'][task].get('score', ''),
        'returns': ' '.join(f'{r:.1f}' for r in returns[task]),
      }
      rows.append(row)
      on_row(row)
    if len(tasks) > 1:
      every = np.concatenate([returns[t] for t in tasks])
      row = {
        'learner_steps': step,
        'task': 'mean',
        'episodes': episodes,
        'mean_return': summary['mean_return'],
        'min_return': float(every.min()),
        'max_return': float(every.max()),
        'score': summary.get('mean_score', ''),
        'returns': '',
      }
      rows.append(row)
      on_row(row)
    print(
      f'[evaluate] checkpoint {step}: {len(tasks)} task(s) x {episodes} episodes '
      f'({time.time() - start:.0f}s)',
      flush=True,
    )
  return rows


def _ints(text: str) -> List[int]:
  return [int(s) for s in text.split(',') if s.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
  from agents.common.errors import UserError
  from launch.cli import agent_setting

  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--run_dir', required=True)
  p.add_argument('--episodes', type=int, default=10, help='greedy episodes a task (10)')
  p.add_argument('--steps', type=_ints, default=None, help='comma-separated (every kept one)')
  p.add_argument('--tasks', default=None, help="comma-separated (the run's)")
  p.add_argument('--seed', type=int, default=100, help='episode k plays on seed + k')
  p.add_argument('--out', default=None, help='a CSV for the rows (else printed only)')
  p.add_argument(
    '--agent',
    type=agent_setting,
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help='an acting setting for these episodes, e.g. model.greedy_decoding=argmax',
  )
  args = p.parse_args(sys.argv[1:] if argv is None else argv)

  def show(row: Dict[str, Any]) -> None:
    score = f', score {row["score"]:.1f}' if row['score'] != '' else ''
    print(
      f'[evaluate] {row["learner_steps"]} {row["task"]}: mean return '
      f'{row["mean_return"]:.1f} ({row["min_return"]:.1f}..{row["max_return"]:.1f}){score}',
      flush=True,
    )

  tasks = [t for t in args.tasks.split(',') if t] if args.tasks else None
  try:
    rows = evaluate_checkpoints(
      args.run_dir, args.episodes, args.steps, tasks, args.seed, show, args.agent
    )
  except UserError as e:
    print(f'[evaluate] {e}', file=sys.stderr)
    return 2
  if args.out:
    with open(args.out, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=FIELDS)
      writer.writeheader()
      writer.writerows(rows)
    print(f'[evaluate] {len(rows)} rows in {args.out}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
