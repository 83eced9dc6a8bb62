"""The learner benchmark: SGD steps/s on the Reverb pipeline against an in-memory batch."""

import itertools
import pathlib
from typing import Any, Dict, List, Optional, Sequence

from experiments.throughput.in_process import (ReplayServer, fill_replay, learner_in_memory,
                                               make_builder, make_env, one_step, record_episode)
from experiments.throughput.timing import (Rate, Row, Series, figure_rows, measure, report,
                                           timed_rate)


def bench_learner(out: pathlib.Path, task: str, presets: Sequence[str], agent: Dict[str, Any],
                  seconds: float, repeats: int, fill: int, settle: float = 0.5,
                  max_episode_steps: Optional[int] = None, seed: int = 1) -> List[Row]:
  """Learner steps/s on the Reverb pipeline against the same update on an in-memory batch."""
  rows, samples = [], []
  for preset in presets:
    builder = make_builder(task, preset, agent)
    replay = ReplayServer(builder)
    try:
      episode = record_episode(make_env(task, seed, max_episode_steps), seed)
      fill_replay(replay, builder, episode, max(fill, builder.config.replay.min_replay_size))
      series = _learner_series(builder, replay, seconds, repeats, settle)
    finally:
      replay.stop()
    r, s = figure_rows('learner', preset, series, seconds)
    rows += r
    samples += s
  return report(out, 'learner', rows, samples)


def _learner_series(builder, replay: ReplayServer, seconds: float, repeats: int,
                    settle: float) -> List[Series]:
  """One learner, one compiled update: only the iterator differs between the windows."""
  iterator = builder.make_dataset_iterator(replay.address)
  batch = next(iterator)
  learner = learner_in_memory(builder, batch)
  step = one_step(learner)

  def on(it) -> Rate:
    def rate() -> float:
      learner.set_iterator(it)
      return timed_rate(step, seconds, settle)
    return rate

  on(iterator)()  # Warms up the pipeline (connections, prefetch, autotuning).
  return measure(on(itertools.repeat(batch)), {'learner_pipeline': on(iterator)}, repeats,
                 {'learner_pipeline': 'steps/s'}, 'learner_in_memory')
