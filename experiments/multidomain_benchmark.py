"""One transformer dynamics model for several domains against one model per domain.

  python -m experiments.multidomain_benchmark --tasks cartpole:swingup,point_mass:easy \\
      --out bench_out/multidomain

Issue 23's benchmark 4. The data: --train_episodes episodes of uniformly random actions per
task, and --test_episodes more (other seeds) to measure on. The models are the planning
agent's transformer (agents.planning.sequence_model: the shared tokeniser, the change of
the observation as the target), all of one size: positions and context for the largest
timestep of the tasks, so the single-task models have exactly the multi-task model's
parameters. The multi-task model trains --train_steps batches of each task, in turn. Each
single-task model trains on its own task and is measured twice: after --train_steps
batches (`single_task`: the same updates per task, so for two tasks half the multi-task
model's in all) and after --train_steps times the number of tasks (`single_task_equal_total`:
as many updates as the multi-task model). Every --seeds seed draws its own data, batches
and initial weights.

Measured per task on its test transitions: the token loss (nats per token of the change)
and the greedy prediction's error, mean |predicted change - true change| over the mean
|true change|, per feature and then averaged over features (0 is perfect, 1 is as far off
as predicting no change).

Writes:
  <out>/multidomain.csv  seed, model, task, test_loss, relative_error, train_steps, seconds
  <out>/multidomain.png  both measures per task and model (mean over seeds, each seed a dot)
"""

import argparse
import csv
import os
import pathlib
import time
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402

from experiments import transitions  # noqa: E402
from launch.cli import require_positive, task_list  # noqa: E402

FIELDS = ('seed', 'model', 'task', 'test_loss', 'relative_error', 'train_steps', 'seconds')
PROGRESS_SECONDS = 30.0


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--tasks', default='cartpole:swingup,point_mass:easy')
  p.add_argument('--train_episodes', type=int, default=10, help='per task')
  p.add_argument('--test_episodes', type=int, default=2, help='per task')
  p.add_argument('--train_steps', type=int, default=2000, help='batches of each task')
  p.add_argument('--batch_size', type=int, default=128)
  p.add_argument('--seeds', default='0', help='comma-separated, e.g. 0,1,2')
  p.add_argument('--out', default='bench_out/multidomain')
  args = p.parse_args(argv)
  args.task_list = task_list(p, '--tasks', args.tasks, at_least=2)
  require_positive(p, args, ('train_episodes', 'test_episodes', 'train_steps', 'batch_size'))
  try:
    args.seed_list = [int(s) for s in args.seeds.split(',') if s.strip()]
  except ValueError:
    p.error(f'--seeds: comma-separated integers, got {args.seeds!r}')
  if not args.seed_list or len(set(args.seed_list)) != len(args.seed_list):
    p.error(f'--seeds: name at least one seed, each once; got {args.seeds!r}')
  return args


def random_transitions(task: str, episodes: int, seed: int) -> Dict[str, np.ndarray]:
  """One-step transitions of `episodes` episodes of uniformly random actions on `task`."""
  from environments.suite import make_environment

  return transitions.random_transitions(lambda s: make_environment(task, seed=s), episodes, seed)


class _Domain:
  """A task's layout, data, jitted update and measures, over a model shared or not."""

  def __init__(self, task, model, layout, optimizer, train, test, batch_size, seed):
    import jax

    from agents.planning import sequence_model

    self.task, self.layout, self.test = task, layout, test
    self.batches = transitions.batches(train, batch_size, seed)
    self.update = jax.jit(sequence_model.make_sequence_update_fn(model, layout, optimizer))
    loss = sequence_model.make_sequence_loss_fn(model, layout)
    self.loss = jax.jit(lambda state, batch: loss(state.params, batch)[0])

    def predict(params, obs, action):
      return sequence_model.predict_change_and_reward(model, params, layout, obs, action)[0]

    self.predict = jax.jit(predict)

  def measure(self, state, chunk: int = 1000) -> Dict[str, float]:
    from acme import types

    test, n = self.test, len(self.test['reward'])
    losses, changes = [], []
    for start in range(0, n, chunk):
      part = {k: v[start : start + chunk] for k, v in test.items()}
      batch = types.Transition(
        part['observation'], part['action'], part['reward'],
        np.ones_like(part['reward']), part['next_observation'],
      )  # fmt: skip
      losses.append(float(self.loss(state, batch)) * len(part['reward']))
      changes.append(np.asarray(self.predict(state.params, part['observation'], part['action'])))
    true = test['next_observation'] - test['observation']
    error = np.abs(np.concatenate(changes) - true).mean(0) / np.maximum(np.abs(true).mean(0), 1e-8)
    return {'test_loss': sum(losses) / n, 'relative_error': float(error.mean())}


MODELS = ('multi_task', 'single_task', 'single_task_equal_total')


def _data(task_list: Sequence[str], args, seed: int) -> Dict[str, tuple]:
  data = {}
  for i, task in enumerate(task_list):
    task_seed = seed + 1000 * i
    data[task] = (
      random_transitions(task, args.train_episodes, task_seed),
      random_transitions(task, args.test_episodes, task_seed + 500),
    )
    train, test = data[task]
    print(
      f'[data] seed {seed}, {task}: {len(train["reward"])} train and {len(test["reward"])} test '
      f'transitions, observation {train["observation"].shape[1]}, action '
      f'{train["action"].shape[1]}',
      flush=True,
    )
  return data


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  import jax

  from agents.planning import learning, sequence_model
  from agents.planning.config import PlanningConfig
  from networks.transformer import TransformerSizes, make_transformer

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  config = PlanningConfig()
  m, o = config.model, config.optim
  rows = []
  with open(out / 'multidomain.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    for seed in args.seed_list:
      data = _data(args.task_list, args, seed)
      layouts = {
        t: sequence_model.dynamics_layout(train['observation'].shape[1], train['action'].shape[1])
        for t, (train, _) in data.items()
      }
      longest = max(layout.num_tokens for layout in layouts.values())
      sizes = TransformerSizes(
        vocab_size=next(iter(layouts.values())).vocab.size,
        num_positions=longest,
        max_len=2 * longest,
        model_size=m.transformer_size,
        num_heads=m.transformer_heads,
        num_layers=m.transformer_layers,
      )
      model = make_transformer(sizes)
      optimizer = learning.make_optimizer(o.learning_rate, o.max_grad_norm, o.weight_decay)
      n = len(args.task_list)
      # (model name, its tasks, {step: name of the rows measured then}).
      single = {args.train_steps: 'single_task', args.train_steps * n: 'single_task_equal_total'}
      arms = [('multi_task', args.task_list, {args.train_steps: 'multi_task'})]
      arms += [('single_task', [t], single) for t in args.task_list]
      for name, tasks, measure_at in arms:
        key = jax.random.PRNGKey(seed)
        state = sequence_model.initial_sequence_state(model, optimizer, key)
        doms = [
          _Domain(t, model, layouts[t], optimizer, *data[t], args.batch_size, seed) for t in tasks
        ]
        steps = max(measure_at)
        start = last = time.time()
        for step in range(1, steps + 1):
          for d in doms:  # One batch of each task in turn.
            state, metrics = d.update(state, next(d.batches))
          if time.time() - last >= PROGRESS_SECONDS or step == steps:
            last = time.time()
            print(
              f'  seed {seed} {name} {",".join(tasks)}: step {step}/{steps}, loss '
              f'{float(metrics["model_loss"]):.3f}, {last - start:.0f} s',
              flush=True,
            )
          if step not in measure_at:
            continue
          for d in doms:
            row = {
              'seed': seed,
              'model': measure_at[step],
              'task': d.task,
              **d.measure(state),
              'train_steps': step * len(doms),
              'seconds': round(time.time() - start),
            }
            rows.append(row)
            writer.writerow(row)
            f.flush()
            print(
              f'seed {seed} {row["model"]} on {d.task}: test loss {row["test_loss"]:.3f} '
              f'nats a token, relative error {row["relative_error"]:.3f}',
              flush=True,
            )
  for line in summary(rows, args.task_list):
    print(line, flush=True)
  _plot(rows, args.task_list, out / 'multidomain.png')
  print(f'wrote {out / "multidomain.csv"} and {out / "multidomain.png"}')
  return 0


def summary(rows: List[Dict], tasks: Sequence[str]) -> List[str]:
  """Per task: the multi-task model's relative error over each single-task model's, per seed
  and as the ratio of the means over seeds."""
  lines = []
  for task in tasks:
    for single in MODELS[1:]:
      pairs = [
        (r, s)
        for r in rows
        if r['model'] == 'multi_task' and r['task'] == task
        for s in rows
        if s['model'] == single and s['task'] == task and s['seed'] == r['seed']
      ]
      if not pairs:
        continue
      ratios = ', '.join(f'{r["relative_error"] / s["relative_error"]:.2f}' for r, s in pairs)
      mean = np.mean([r['relative_error'] for r, _ in pairs]) / np.mean(
        [s['relative_error'] for _, s in pairs]
      )
      lines.append(
        f'{task}: multi-task / {single} relative error {mean:.2f} (mean over '
        f'{len(pairs)} seeds; per seed {ratios})'
      )
  return lines


def _plot(rows: List[Dict], tasks: Sequence[str], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
  x = np.arange(len(tasks))
  width = 0.8 / len(MODELS)
  for ax, key, label in zip(
    axes, ('test_loss', 'relative_error'), ('test loss (nats a token)', 'relative error')
  ):
    for i, name in enumerate(MODELS):
      offset = (i - (len(MODELS) - 1) / 2) * width
      per_task = [[r[key] for r in rows if r['model'] == name and r['task'] == t] for t in tasks]
      ax.bar(x + offset, [np.mean(v) if v else np.nan for v in per_task], width, label=name)
      for j, values in enumerate(per_task):
        ax.plot([x[j] + offset] * len(values), values, 'k.', markersize=4)
    ax.set_xticks(x)
    ax.set_xticklabels(tasks)
    ax.set_ylabel(label)
  axes[0].legend(fontsize=8)
  fig.suptitle('one transformer dynamics model for all tasks against one per task (dots: seeds)')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == '__main__':
  raise SystemExit(main())
