"""One transformer dynamics model for several domains against one model per domain.

  python -m experiments.multidomain_benchmark --tasks cartpole:swingup,point_mass:easy \\
      --out bench_out/multidomain

Issue 23's benchmark 4. The data: --train_episodes episodes of uniformly random actions per
task, and --test_episodes more (other seeds) to measure on. The models are the planning
agent's transformer (agents.planning.sequence_model: the shared tokeniser, the change of
the observation as the target), all of one size: positions and context for the largest
timestep of the tasks, so the single-task models have exactly the multi-task model's
parameters. The multi-task model trains --train_steps batches of each task, in turn; each
single-task model --train_steps batches of its own task (the same updates per task, half
the multi-task model's in all for two tasks).

Measured per task on its test transitions: the token loss (nats per token of the change)
and the greedy prediction's error, mean |predicted change - true change| over the mean
|true change|, per feature and then averaged over features (0 is perfect, 1 is as far off
as predicting no change).

Writes:
  <out>/multidomain.csv  model, task, test_loss, relative_error, train_steps, seconds
  <out>/multidomain.png  both measures per task, multi-task against single-task
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

FIELDS = ('model', 'task', 'test_loss', 'relative_error', 'train_steps', 'seconds')
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
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='bench_out/multidomain')
  args = p.parse_args(argv)
  from environments.suite import parse_task

  args.task_list = [t.strip() for t in args.tasks.split(',') if t.strip()]
  if len(args.task_list) < 2 or len(set(args.task_list)) != len(args.task_list):
    p.error('--tasks: name at least two different tasks')
  for task in args.task_list:
    try:
      parse_task(task)
    except ValueError as e:
      p.error(f'--tasks: {e}')
  for name in ('train_episodes', 'test_episodes', 'train_steps', 'batch_size'):
    if getattr(args, name) < 1:
      p.error(f'--{name} must be >= 1')
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
    from networks.sequence_dynamics import predict_next_observation

    self.task, self.layout, self.test = task, layout, test
    self.batches = transitions.batches(train, batch_size, seed)
    self.update = jax.jit(sequence_model.make_sequence_update_fn(model, layout, optimizer))
    loss = sequence_model.make_sequence_loss_fn(model, layout)
    self.loss = jax.jit(lambda state, batch: loss(state.params, batch)[0])
    positions = np.asarray(layout.positions)

    def predict(params, obs, action):
      tokens = layout.timestep_tokens(obs, action)
      where = np.broadcast_to(positions, tokens.shape)
      return predict_next_observation(model, params, layout, tokens, where)

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


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  import jax

  from agents.planning import learning, sequence_model
  from agents.planning.config import PlanningConfig
  from networks.tokenizer import flat_layout
  from networks.transformer import TransformerSizes, make_transformer

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  config = PlanningConfig()
  m, o = config.model, config.optim
  data = {}
  for i, task in enumerate(args.task_list):
    seed = args.seed + 1000 * i
    data[task] = (
      random_transitions(task, args.train_episodes, seed),
      random_transitions(task, args.test_episodes, seed + 500),
    )
    train, test = data[task]
    print(
      f'[data] {task}: {len(train["reward"])} train and {len(test["reward"])} test transitions, '
      f'observation {train["observation"].shape[1]}, action {train["action"].shape[1]}',
      flush=True,
    )
  layouts = {
    t: flat_layout(train['observation'].shape[1], train['action'].shape[1])
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

  def domains(tasks: Sequence[str]) -> List[_Domain]:
    return [
      _Domain(t, model, layouts[t], optimizer, *data[t], args.batch_size, args.seed) for t in tasks
    ]

  arms = [('multi_task', args.task_list)] + [('single_task', [t]) for t in args.task_list]
  rows = []
  with open(out / 'multidomain.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    for name, tasks in arms:
      state = sequence_model.initial_sequence_state(model, optimizer, jax.random.PRNGKey(args.seed))
      doms = domains(tasks)
      start = last = time.time()
      for step in range(1, args.train_steps + 1):
        for d in doms:  # One batch of each task in turn.
          state, metrics = d.update(state, next(d.batches))
        if time.time() - last >= PROGRESS_SECONDS or step == args.train_steps:
          last = time.time()
          loss = float(metrics['model_loss'])
          print(f'  {name} {",".join(tasks)}: step {step}/{args.train_steps}, loss {loss:.3f}, '
                f'{last - start:.0f} s', flush=True)  # fmt: skip
      seconds = time.time() - start
      for d in doms:
        row = {'model': name, 'task': d.task, **d.measure(state),
               'train_steps': args.train_steps * len(doms), 'seconds': round(seconds)}  # fmt: skip
        rows.append(row)
        writer.writerow(row)
        f.flush()
        print(f'{name} on {d.task}: test loss {row["test_loss"]:.3f} nats a token, relative '
              f'error {row["relative_error"]:.3f}', flush=True)  # fmt: skip
  for task in args.task_list:
    multi, single = (
      next(r for r in rows if r['model'] == n and r['task'] == task)
      for n in ('multi_task', 'single_task')
    )
    print(
      f'{task}: multi-task / single-task relative error '
      f'{multi["relative_error"] / single["relative_error"]:.2f}, test loss '
      f'{multi["test_loss"]:.3f} vs {single["test_loss"]:.3f}',
      flush=True,
    )
  _plot(rows, args.task_list, out / 'multidomain.png')
  print(f'wrote {out / "multidomain.csv"} and {out / "multidomain.png"}')
  return 0


def _plot(rows: List[Dict], tasks: Sequence[str], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  x = np.arange(len(tasks))
  for ax, key, label in zip(
    axes, ('test_loss', 'relative_error'), ('test loss (nats a token)', 'relative error')
  ):
    for i, name in enumerate(('multi_task', 'single_task')):
      values = [next(r[key] for r in rows if r['model'] == name and r['task'] == t) for t in tasks]
      ax.bar(x + (i - 0.5) * 0.38, values, 0.38, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(tasks)
    ax.set_ylabel(label)
  axes[0].legend()
  fig.suptitle('one transformer dynamics model for all tasks against one per task')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == '__main__':
  raise SystemExit(main())
