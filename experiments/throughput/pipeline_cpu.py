"""CPU time per batch of the learner's Reverb pipeline, against the adder's chunk bound and
the items' layout.

  python -m experiments.throughput.pipeline_cpu --task walker:walk --keep_alive 1,4,16
  python -m experiments.throughput.pipeline_cpu --task walker:walk --keep_alive 16 \
      --layouts five,packed

The learner benchmark (`throughput_benchmark learner`) gives the pipeline's cost as a
wall-clock ratio; this says what it costs in CPU, the figure that matters on 2 cores where
the update's XLA threads already use both. Each row fills its own in-process server through
our n-step adder with `keep_alive_steps` = K (the writer's chunks hold up to K rows, so a
sampled item unpacks up to K rows per column), then times `builder.make_dataset_iterator`
(the learner's: Reverb's TrajectoryDataset, batched, prefetched) over it. Process CPU counts
every thread: the server's sampling, Reverb's unpacking and TensorFlow's batching. The
adder's CPU per item while filling is printed beside it. `--layouts`: acme's five columns
an item, and `replay.packed_items`' one (agents.packed_items), each with every K. Median of
`--repeats` windows of `--batches` batches, the rows' iterators interleaved.
"""

import argparse
import os
import time
from typing import Dict, List, Tuple

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--task', default='walker:walk')
  p.add_argument('--preset', default='cpu')
  p.add_argument('--keep_alive', default='1,4,16', help='comma-separated adder chunk bounds')
  p.add_argument(
    '--layouts', default='five', help="comma-separated item layouts: five (acme's), packed"
  )
  p.add_argument('--fill', type=int, default=5000, help='items in each table')
  p.add_argument('--batches', type=int, default=400)
  p.add_argument('--repeats', type=int, default=3)
  args = p.parse_args(argv)

  import numpy as np

  from agents.nstep_adder import NStepAdder
  from agents.replay_pipeline import ADDER_MAX_IN_FLIGHT_ITEMS, REPLAY_TABLE
  from experiments.throughput.in_process import (
    ReplayServer,
    fill_replay,
    make_builder,
    make_env,
    record_episode,
  )

  layouts = args.layouts.split(',')
  unknown = sorted(set(layouts) - {'five', 'packed'})
  if unknown:
    p.error(f'--layouts: unknown {unknown}; five or packed')
  builders = {
    layout: make_builder(args.task, args.preset, {'replay.packed_items': layout == 'packed'})
    for layout in layouts
  }
  replay_config = builders[layouts[0]].config.replay
  episode = record_episode(make_env(args.task, 1, None), 1)
  servers, iterators, adder_us = [], {}, {}
  try:
    for layout, builder in builders.items():
      for keep_alive in [int(k) for k in args.keep_alive.split(',')]:
        row = (layout, keep_alive)
        replay = ReplayServer(builder)
        servers.append(replay)
        adder = NStepAdder(
          replay.client,
          replay_config.n_step,
          replay_config.discount,
          REPLAY_TABLE,
          ADDER_MAX_IN_FLIGHT_ITEMS,
          keep_alive_steps=keep_alive,
          packed=builder.packed() is not None,
        )
        start = time.process_time()
        fill_replay(replay, builder, episode, args.fill, adder)
        adder.close()
        adder_us[row] = (time.process_time() - start) / replay.size() * 1e6
        iterators[row] = builder.make_dataset_iterator(replay.address)
        for _ in range(30):  # Connections, prefetch and autotuning settle.
          next(iterators[row])
        print(
          f'[pipeline_cpu] filled {replay.size()} items, {layout}, keep_alive {keep_alive}',
          flush=True,
        )
    ms: Dict[Tuple[str, int], List[float]] = {k: [] for k in iterators}
    for _ in range(args.repeats):
      for row, iterator in iterators.items():
        time.sleep(0.3)  # The other iterators' prefetch buffers fill and go idle.
        start = time.process_time()
        for _ in range(args.batches):
          next(iterator)
        ms[row].append((time.process_time() - start) / args.batches * 1e3)
    batch = replay_config.batch_size
    for (layout, keep_alive), values in ms.items():
      median = float(np.median(values))
      print(
        f'{layout:6s} keep_alive {keep_alive:3d}: {median:.2f} ms CPU a batch of {batch} '
        f'({min(values):.2f}-{max(values):.2f}), {median / batch * 1e3:.1f} us an item; '
        f'adder {adder_us[(layout, keep_alive)]:.0f} us CPU an item while filling',
        flush=True,
      )
  finally:
    for replay in servers:
      replay.stop()
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
