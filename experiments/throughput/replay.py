"""The replay benchmark: adder inserts against raw writer inserts, dataset samples against
what the learner consumes."""

import pathlib
from typing import Any, Dict, List, Optional

from experiments.throughput.in_process import (
  ReplayServer,
  adder_episode,
  configured_spi,
  fill_replay,
  learner_in_memory,
  make_builder,
  make_env,
  one_step,
  record_episode,
)
from experiments.throughput.timing import Row, Series, figure_rows, measure, report, timed_rate


def bench_replay(
  out: pathlib.Path,
  task: str,
  preset: str,
  agent: Dict[str, Any],
  seconds: float,
  repeats: int,
  fill: int,
  settle: float = 0.5,
  max_episode_steps: Optional[int] = None,
  seed: int = 1,
) -> List[Row]:
  """Adder inserts vs raw writer inserts; dataset iterator samples vs the learner's need."""
  builder = make_builder(task, preset, agent)
  spi = configured_spi(preset, agent)
  replay = ReplayServer(builder)
  try:
    episode = record_episode(make_env(task, seed, max_episode_steps), seed)
    fill_replay(replay, builder, episode, max(fill, builder.config.replay.min_replay_size))
    inserts = _insert_series(builder, replay, episode, seconds, repeats)
    samples = _sample_series(builder, replay, seconds, repeats, settle)
  finally:
    replay.stop()
  series = [inserts, samples]
  if spi is not None:
    # Inserts/s the learner needs at its SPI: steps/s x batch / SPI = consumed samples/s / SPI.
    series.append(
      Series(
        'adder_vs_insert_need',
        'items/s',
        f'insert_need_at_spi_{spi:g}',
        list(inserts.values),
        [c / spi for c in samples.ceilings],
        inserts.loads,
      )
    )
  rows, sample_rows = figure_rows('replay', preset, series, seconds)
  return report(out, 'replay', rows, sample_rows)


def _insert_series(builder, replay: ReplayServer, episode, seconds: float, repeats: int) -> Series:
  """Items/s through the adder (fed a recorded episode: no environment, no policy) against
  a raw TrajectoryWriter writing the same items, one append and create_item each."""
  import tree

  from agents.replay_pipeline import REPLAY_TABLE

  adder = builder.make_adder(replay.client)
  feed = adder_episode(adder, episode)
  before = replay.inserts()
  feed()
  per_episode = replay.inserts() - before  # Items one episode gives (n-step tails included).

  def adder_chunk() -> int:
    feed()
    return per_episode

  # The same items: read back through the builder's dataset.
  sample = next(builder.make_dataset_iterator(replay.address, batch_size=per_episode))
  data = getattr(sample, 'data', sample)
  items = [tree.map_structure(lambda x, i=i: x[i], data) for i in range(per_episode)]
  if builder.packed() is not None:  # The table's one column: each item as its packed row.
    from agents.packed_items import pack

    items = [pack(*item[:5]) for item in items]
  # The adder's own flush policy (the name acme's adder and agents.nstep_adder share).
  in_flight = adder._max_in_flight_items  # pylint: disable=protected-access
  writer = replay.client.trajectory_writer(num_keep_alive_refs=1)

  def raw_chunk() -> int:
    for item in items:
      writer.append(item)
      writer.create_item(REPLAY_TABLE, 1.0, tree.map_structure(lambda c: c[-1], writer.history))
      writer.flush(in_flight)
    writer.end_episode()  # Everything acknowledged, as at the adder's episode end.
    return len(items)

  try:
    raw_chunk()
    (series,) = measure(
      lambda: timed_rate(raw_chunk, seconds),
      {'adder_inserts': lambda: timed_rate(adder_chunk, seconds)},
      repeats,
      {'adder_inserts': 'items/s'},
      'raw_writer_inserts',
    )
  finally:
    writer.close()
  return series


def _sample_series(
  builder, replay: ReplayServer, seconds: float, repeats: int, settle: float
) -> Series:
  """Samples/s the builder's dataset iterator delivers against the samples/s an
  in-memory learner consumes (steps/s x batch size)."""
  batch_size = builder.config.replay.batch_size
  iterator = builder.make_dataset_iterator(replay.address)
  learner_step = one_step(learner_in_memory(builder, next(iterator)))

  def next_batch() -> int:
    next(iterator)
    return batch_size

  def consumed() -> float:
    return timed_rate(learner_step, seconds, settle) * batch_size

  (series,) = measure(
    consumed,
    {'dataset_samples': lambda: timed_rate(next_batch, seconds, settle)},
    repeats,
    {'dataset_samples': 'samples/s'},
    'learner_samples_in_memory',
  )
  return series
