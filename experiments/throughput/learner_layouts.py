"""The learner's rate on the Reverb pipeline against its rate on a batch in memory, for three
pipelines in one run: acme's five columns an item, packed items (`replay.packed_items`), and
packed items drawn several batches a TensorFlow call (`replay.batches_per_draw`; both are
the cpu preset's).

  python -m experiments.throughput.learner_layouts --task walker:walk --rounds 10 \
      --out experiments/results/throughput/learner_layouts_2026-12-07

`throughput_benchmark learner` gives the preset's own figure; on this noisy 2-core machine
its ceiling drifts by 10-20% between windows, more than these pipelines differ. Here each
round times, for every pipeline in turn, a window in memory, one on the pipeline and one
in memory again (the same learner and compiled update), so each ratio is against the
windows beside it. Also the process CPU a step the pipeline adds to the update's (both of
XLA's threads and TensorFlow's). Median over rounds, quartiles beside it; a CSV of every
round.
"""

import argparse
import itertools
import os
import pathlib
import statistics
import time
from typing import Any, Dict, List, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# (name, replay.packed_items, replay.batches_per_draw; None: the cpu preset's)
PIPELINES = (('five_columns', False, 1), ('packed', True, 1), ('packed_draws', True, None))


def measure(
  task: str, rounds: int, seconds: float, fill: int, agent: Optional[Dict[str, Any]] = None
) -> List[Dict[str, Any]]:
  """A row a round and pipeline: steps/s on it, in memory beside it, their ratio, and the
  process CPU a step it adds. `agent`: overrides of the cpu preset (tests)."""
  from experiments.throughput.in_process import (
    ReplayServer,
    fill_replay,
    learner_in_memory,
    make_builder,
    make_env,
    one_step,
    record_episode,
  )

  episode = record_episode(make_env(task, 1, None), 1)
  servers, iterators, per_draw = [], {}, {}
  try:
    for name, packed, draws in PIPELINES:
      settings = {**(agent or {}), 'replay.packed_items': packed}
      if draws is not None:
        settings['replay.batches_per_draw'] = draws
      builder = make_builder(task, 'cpu', settings)
      per_draw[name] = builder.config.replay.batches_per_draw
      replay = ReplayServer(builder)
      servers.append(replay)
      fill_replay(replay, builder, episode, max(fill, builder.config.replay.min_replay_size))
      iterators[name] = builder.make_dataset_iterator(replay.address)
    batch = next(iterators['packed_draws'])
    learner = learner_in_memory(builder, batch)
    step = one_step(learner)

    def window(iterator, seconds: float):
      """(steps/s, process CPU ms a step) over one window after 20 steps."""
      learner.set_iterator(iterator)
      for _ in range(20):
        step()
      start, cpu, n = time.perf_counter(), time.process_time(), 0
      while time.perf_counter() - start < seconds or n == 0:
        step()
        n += 1
      return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e3

    memory = itertools.repeat(batch)
    for iterator in iterators.values():
      window(iterator, 1.0)  # Connections, prefetch and autotuning settle.
    rows: List[Dict[str, Any]] = []
    for r in range(rounds):
      for name, iterator in iterators.items():
        before = window(memory, seconds)
        on = window(iterator, seconds)
        after = window(memory, seconds)
        ceiling = (before[0] + after[0]) / 2
        rows.append(
          dict(
            task=task,
            pipeline=name,
            batches_a_draw=per_draw[name],
            round=r,
            steps_per_s=on[0],
            in_memory_steps_per_s=ceiling,
            ratio=on[0] / ceiling,
            extra_cpu_ms=on[1] - (before[1] + after[1]) / 2,
          )
        )
      print(f'[learner_layouts] round {r + 1}/{rounds}', flush=True)
    return rows
  finally:
    for replay in servers:
      replay.stop()


def plot(rows: List[Dict[str, Any]], path: pathlib.Path) -> pathlib.Path:
  """Each pipeline's ratio a round (dots) and median (bar), the 0.9 target as a line."""
  from experiments.plot_run import new_figure, save

  fig, (ax,) = new_figure(width=6.0, height=4.0)
  names = [name for name, _, _ in PIPELINES]
  for x, name in enumerate(names):
    ratios = [float(r['ratio']) for r in rows if r['pipeline'] == name]
    ax.bar(x, statistics.median(ratios), color='C0', alpha=0.5)
    ax.plot([x] * len(ratios), ratios, 'k.', alpha=0.6)
  ax.axhline(0.9, color='C3', linestyle='--', label='target 0.9')
  ax.set_xticks(range(len(names)), names)
  ax.set_ylabel('learner steps/s on the pipeline / in memory')
  ax.set_title(f'{rows[0]["task"]}: median of {len(rows) // len(names)} rounds')
  ax.legend(loc='lower right')
  return save(fig, path)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--task', default='walker:walk')
  p.add_argument('--rounds', type=int, default=10)
  p.add_argument('--seconds', type=float, default=3.0, help='seconds a window')
  p.add_argument('--fill', type=int, default=10_000, help='items in each table')
  p.add_argument('--out', type=pathlib.Path, default=None, help='directory of the CSV')
  args = p.parse_args(argv)

  import numpy as np

  from experiments.throughput.timing import write_csv

  rows = measure(args.task, args.rounds, args.seconds, args.fill)
  print(
    f'{args.task}: {args.rounds} rounds of {args.seconds:g} s windows '
    '(in memory, pipeline, in memory)'
  )
  for name, _, _ in PIPELINES:
    mine = [row for row in rows if row['pipeline'] == name]
    ratios = [row['ratio'] for row in mine]
    print(
      f'{name:13s} (batches a draw {mine[0]["batches_a_draw"]}) ratio '
      f'{statistics.median(ratios):.3f} '
      f'(quartiles {np.percentile(ratios, 25):.3f}-{np.percentile(ratios, 75):.3f}), '
      f'CPU beside the update {statistics.median(r["extra_cpu_ms"] for r in mine):.2f} ms a step, '
      f'in memory {statistics.median(r["in_memory_steps_per_s"] for r in mine):.0f} steps/s',
      flush=True,
    )
  if args.out:
    path = args.out / f'{args.task.replace(":", "_")}.csv'
    write_csv(path, list(rows[0]), rows)
    plot(rows, path.with_suffix('.png'))
    print(f'[learner_layouts] wrote {path} and .png')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
