"""Acting cost of the generalist: actor steps per second with and without the key-value
cache, and learner tokens per second (issue 22's benchmark 4).

  python -m experiments.generalist_acting_benchmark --tasks cartpole:swingup,walker:walk \\
      --out bench_out/generalist_acting

For each task, the Gato agent's `--preset` model over its whole `model.context` (the `cpu`
preset's 128 tokens; `window.timesteps` is set to 0 here, since a context of one timestep
leaves a cache nothing to save) acts greedily in the real environment two ways, in
alternating timed windows of --window_steps environment steps (--repeats of each; the median
is reported, and the ratio of medians, both measured in this one run):

  cached      the program's actor (agents.gato.actor.GatoActor): each step appends the
              observation's tokens to the key-value cache and decodes one token per action
              dimension over it;
  full_pass   the same context, kept as tokens, with one forward pass over all of it per
              action dimension (agents.gato.decoding.make_full_pass_decoder), as a
              transformer without a cache acts.

Both keep the context as the actor does: when the next timestep does not fit, the latest
half of the timesteps stays. Before timing, both act on the same observations and the
share of identical actions is recorded (1.0: the cache changes nothing but the cost).
The learner's tokens per second: the agent's learner on batches of random windows of the
task's layout (window tokens x batch x updates / seconds, compilation excluded). Beside it,
the jitted update as the learner runs it (logits at the action targets alone) against the
same update with logits at every position, in alternating windows of --learner_steps
(--repeats of each; `targets_update_ratio`, the ratio of median update rates).
Parameters are the fresh initial ones: acting cost does not depend on what they learnt.

Writes:
  <out>/acting.csv   task, mode, repeat, steps, seconds, steps_per_s
  <out>/summary.csv  task, cached_steps_per_s, full_pass_steps_per_s, ratio,
                     same_actions, learner_tokens_per_s, tokens_per_timestep, context
  <out>/acting.png   steps per second per task and mode
"""

import argparse
import csv
import os
import pathlib
import time
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402

from launch.cli import agent_setting, require_positive, task_list  # noqa: E402

SUMMARY_FIELDS = (
  'task', 'cached_steps_per_s', 'full_pass_steps_per_s', 'ratio', 'same_actions',
  'learner_tokens_per_s', 'targets_update_ratio', 'tokens_per_timestep', 'context',
)  # fmt: skip


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--tasks', default='cartpole:swingup')
  p.add_argument('--window_steps', type=int, default=200, help='environment steps a window')
  p.add_argument('--repeats', type=int, default=3, help='windows of each mode')
  p.add_argument('--check_steps', type=int, default=100, help='steps compared for equal actions')
  p.add_argument('--learner_steps', type=int, default=20)
  p.add_argument('--preset', default='cpu')
  p.add_argument('--agent', action='append', default=[], type=agent_setting)
  p.add_argument('--out', default='bench_out/generalist_acting')
  args = p.parse_args(argv)
  args.task_list = task_list(p, '--tasks', args.tasks)
  require_positive(p, args, ('window_steps', 'repeats', 'check_steps', 'learner_steps'))
  return args


class FullPassActor:
  """Greedy acting without a cache: the context as tokens, a full pass per action token,
  each chosen `how` (the cached actor's model.greedy_decoding)."""

  def __init__(self, model, layout, params, how: str):
    import jax

    from agents.gato.decoding import make_full_pass_decoder

    self._layout, self._params = layout, params
    self._max_len = model.sizes.max_len
    self._decode = jax.jit(make_full_pass_decoder(model, layout, how))
    self._key = jax.random.PRNGKey(0)
    self.observe_first(None)

  def observe_first(self, timestep) -> None:
    del timestep
    self._tokens = np.zeros((1, self._max_len), np.int32)
    self._positions = np.zeros((1, self._max_len), np.int32)
    self._length = 0

  def _keep_latest_half(self) -> None:
    """As GatoActor's rebuild: the latest half of the context's timesteps stay."""
    n = self._layout.num_tokens
    keep = (self._max_len // n) // 2
    start = self._length - keep * n
    tokens = np.zeros_like(self._tokens)
    positions = np.zeros_like(self._positions)
    tokens[:, : keep * n] = np.asarray(self._tokens)[:, start : self._length]
    positions[:, : keep * n] = np.asarray(self._positions)[:, start : self._length]
    self._tokens, self._positions, self._length = tokens, positions, keep * n

  def select_action(self, observation: np.ndarray) -> np.ndarray:
    if self._length + self._layout.num_tokens > self._max_len:
      self._keep_latest_half()
    obs = np.asarray(observation, np.float32)[None]
    action, _, self._tokens, self._positions, length = self._decode(
      self._params, self._tokens, self._positions, self._length, obs, self._key
    )
    self._length = int(length)
    return np.asarray(action[0])

  def observe(self, action, next_timestep) -> None:
    pass


def _timed_window(actor, env, steps: int, state: Dict) -> float:
  """Seconds for `steps` environment steps of `actor`, episodes continuing across windows."""
  start = time.perf_counter()
  for _ in range(steps):
    if state.get('timestep') is None or state['timestep'].last():
      state['timestep'] = env.reset()
      actor.observe_first(state['timestep'])
    action = actor.select_action(state['timestep'].observation)
    state['timestep'] = env.step(action)
    actor.observe(action, state['timestep'])
  return time.perf_counter() - start


def same_actions(cached, full, env, steps: int) -> float:
  """The share of steps where both actors, given the same observations, act the same."""
  timestep = env.reset()
  cached.observe_first(timestep)
  full.observe_first(timestep)
  same = 0
  for _ in range(steps):
    a = cached.select_action(timestep.observation)
    b = full.select_action(timestep.observation)
    same += int(np.array_equal(a, b))
    timestep = env.step(a)
    cached.observe(a, timestep)
    full.observe(a, timestep)
    if timestep.last():
      break
  return same / steps


def _random_batches(layout, batch_size: int, length: int, seed: int):
  from agents.gato.types import SequenceBatch

  rng = np.random.default_rng(seed)
  low, high = layout.vocab.num_bins // 4, 3 * layout.vocab.num_bins // 4
  steps = length // layout.num_tokens
  positions = np.tile(layout.positions, (batch_size, steps))
  mask = np.tile(layout.positions >= layout.separator_index + 1, (batch_size, steps))
  while True:
    tokens = rng.integers(low, high, positions.shape, dtype=np.int32)
    yield SequenceBatch(tokens, positions.astype(np.int32), mask, np.zeros(batch_size, np.int32))


def update_ratio(builder, batches, steps: int, repeats: int) -> float:
  """Median updates/s of the learner's jitted update (logits at the targets) over that of
  the update with logits everywhere, alternating timed windows of `steps` updates."""
  import jax

  from agents.gato import learning

  model, o = builder.make_networks(), builder.config.optim
  optimizer = learning.make_optimizer(o.learning_rate, o.max_grad_norm, o.weight_decay)
  state = learning.initial_state(model, optimizer, jax.random.PRNGKey(0))
  updates = {
    'targets': jax.jit(learning.make_update_fn(model, optimizer, builder.max_targets())),
    'everywhere': jax.jit(learning.make_update_fn(model, optimizer)),
  }
  batch = next(batches)
  states = {name: jax.block_until_ready(u(state, batch)[0]) for name, u in updates.items()}
  seconds: Dict[str, List[float]] = {name: [] for name in updates}
  for _ in range(repeats):
    for name, update in updates.items():
      start = time.perf_counter()
      for _ in range(steps):
        states[name] = update(states[name], batch)[0]
      jax.block_until_ready(states[name])
      seconds[name].append(time.perf_counter() - start)
  return float(np.median(seconds['everywhere']) / np.median(seconds['targets']))


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  from acme import specs

  from agents import registry
  from agents.common.config import merge_overrides
  from agents.gato.builder import GatoBuilder
  from agents.gato.config import GatoConfig
  from environments.suite import make_environment

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  overrides = [{k: v} for k, v in args.agent]
  # No conditioning: both actors then hold exactly the episode's own timesteps, as many as
  # fit the context.
  settings = merge_overrides(
    GatoConfig, registry.get('gato').preset(args.preset),
    {'window.conditioning': 'none', 'window.timesteps': 0}, *overrides,
  )  # fmt: skip
  config = GatoConfig.from_dict(settings)
  rows, summary = [], []
  with open(out / 'acting.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=('task', 'mode', 'repeat', 'steps', 'seconds',
                                           'steps_per_s'))  # fmt: skip
    writer.writeheader()
    for task in args.task_list:
      env = make_environment(task, seed=0)
      builder = GatoBuilder(config, specs.make_environment_spec(env))
      layout, context = builder.layout, config.model.context
      batches = _random_batches(layout, config.replay.batch_size, context, seed=0)
      learner = builder.make_learner(batches, seed=0)
      params = learner.get_variables(['policy'])[0]
      cached = builder.make_actor(learner, adder=None, seed=0, deterministic=True)
      full = FullPassActor(builder.make_networks(), layout, params, config.model.greedy_decoding)
      same = same_actions(cached, full, make_environment(task, seed=1), args.check_steps)
      print(f'[{task}] {layout.num_tokens} tokens a timestep, context {context}; same actions '
            f'on {same:.0%} of {args.check_steps} steps', flush=True)  # fmt: skip
      seconds: Dict[str, List[float]] = {'cached': [], 'full_pass': []}
      states = {'cached': {}, 'full_pass': {}}
      envs = {m: make_environment(task, seed=2) for m in seconds}
      for mode, actor in (('cached', cached), ('full_pass', full)):
        _timed_window(actor, envs[mode], 20, states[mode])  # Compiled, warm.
      for repeat in range(args.repeats):
        for mode, actor in (('cached', cached), ('full_pass', full)):
          s = _timed_window(actor, envs[mode], args.window_steps, states[mode])
          seconds[mode].append(s)
          per_s = round(args.window_steps / s, 2)
          row = {'task': task, 'mode': mode, 'repeat': repeat, 'steps': args.window_steps,
                 'seconds': round(s, 4), 'steps_per_s': per_s}  # fmt: skip
          rows.append(row)
          writer.writerow(row)
          f.flush()
          print(f'  {task} {mode} window {repeat + 1}/{args.repeats}: '
                f'{row["steps_per_s"]} steps/s', flush=True)  # fmt: skip
      learner.step()  # Compiles.
      start = time.perf_counter()
      for _ in range(args.learner_steps):
        learner.step()
      tokens_per_s = config.replay.batch_size * context * args.learner_steps
      tokens_per_s /= time.perf_counter() - start
      targets_ratio = update_ratio(builder, batches, args.learner_steps, args.repeats)
      rate = {m: args.window_steps / float(np.median(s)) for m, s in seconds.items()}
      summary.append({
        'task': task,
        'cached_steps_per_s': round(rate['cached'], 2),
        'full_pass_steps_per_s': round(rate['full_pass'], 2),
        'ratio': round(rate['cached'] / rate['full_pass'], 3),
        'same_actions': round(same, 3),
        'learner_tokens_per_s': round(tokens_per_s),
        'targets_update_ratio': round(targets_ratio, 3),
        'tokens_per_timestep': layout.num_tokens,
        'context': context,
      })  # fmt: skip
      print(
        f'[{task}] cached {rate["cached"]:.1f} steps/s, full pass {rate["full_pass"]:.1f}: '
        f'{summary[-1]["ratio"]}x; learner {tokens_per_s:.0f} tokens/s; logits at the '
        f'targets {targets_ratio:.2f}x the updates/s of logits everywhere',
        flush=True,
      )
  with open(out / 'summary.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
    writer.writeheader()
    writer.writerows(summary)
  _plot(summary, out / 'acting.png')
  print(f'wrote {out / "acting.csv"}, {out / "summary.csv"} and {out / "acting.png"}')
  return 0


def _plot(summary: List[Dict], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4))
  x = np.arange(len(summary))
  for i, mode in enumerate(('cached', 'full_pass')):
    ax.bar(x + (i - 0.5) * 0.38, [r[f'{mode}_steps_per_s'] for r in summary], 0.38, label=mode)
  ax.set_xticks(x)
  ax.set_xticklabels([f'{r["task"]}\n{r["ratio"]}x' for r in summary])
  ax.set_ylabel('actor steps per second (environment included)')
  ax.legend()
  fig.suptitle('the generalist acting with and without its key-value cache')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == '__main__':
  raise SystemExit(main())
