"""Throughput benchmarks (issue 7): every figure as a ratio against its own ceiling.

  python -m experiments.throughput_benchmark actor   --out experiments/results/throughput
  python -m experiments.throughput_benchmark replay  --out experiments/results/throughput
  python -m experiments.throughput_benchmark learner --presets cpu,published
  python -m experiments.throughput_benchmark scaling --scaling_actors 1,2,4 --scaling_seconds 90
  python -m experiments.throughput_benchmark e2e --from_run runs/cartpole_swingup
  python -m experiments.throughput_benchmark all     # e2e only with --from_run

A machine shared with other work (or with 2 cores) makes absolute rates meaningless, so
each numerator is timed back to back with its ceiling, in the same process where they
share one: windows of --seconds, interleaved over --repeats, the ceiling timed before
and after each repeat (their mean is that repeat's ceiling); the median ratio is reported.

  actor    environment steps/s of the actor as its node runs it (acme EnvironmentLoop,
           MPO policy, VariableClient over an in-process variable source holding the
           learner's initial parameters, NStepTransitionAdder into an in-process Reverb
           server with the builder's tables, the episode store recorder) / bare
           env.step with a constant action on the same wrapped task. Target >= 0.7.
           Partial loops say where the time goes: loop_constant (EnvironmentLoop, constant
           action), actor_no_adder (+ policy and variable client), actor_no_store (+ adder).
  replay   adder_inserts: items/s the adder writes (pre-recorded timesteps, so no
           environment or policy in the loop) / raw reverb TrajectoryWriter writes of the
           same items into the same table (one append and create_item per item, the
           adder's flush policy). dataset_samples: samples/s the builder's dataset iterator
           delivers from a filled table / samples/s the learner consumes (its in-memory
           steps/s x batch size). adder_vs_insert_need: adder items/s / inserts/s the
           learner needs at the preset's samples_per_insert (SPI):
           steps/s x batch / SPI.
  learner  SGD steps/s of MPOLearner.step on the builder's Reverb dataset iterator over a
           filled table / the same learner (one compiled update) stepping on one batch
           held in memory. Target >= 0.8.
  scaling  the real program (python -m experiments.collect_infer) with 1, 2, 4 actors for
           --scaling_seconds each, in fresh run directories: steady-state environment and
           learner steps/s (polled from the replay table's insert and sample counts;
           <run>/counter.json when the table cannot be reached), speed-up against the
           fewest actors, env steps/s against the rate the learner allows at its SPI
           (learner steps/s x batch / SPI), and the peak RSS of every node process.
  e2e      wall-clock seconds until the evaluator's mean return first reaches --e2e_target
           (800) on the task, with the defaults: a fresh run, or --from_run (a run
           directory or an evaluator CSV).

Writes, per benchmark, <out>/<benchmark>.csv (one row per figure), <out>/<benchmark>.png
and, for the ratio benchmarks, <out>/<benchmark>_samples.csv (every repeat); scaling also
writes scaling_rss.csv (peak RSS per node).
"""

import argparse
import csv
import dataclasses
import itertools
import json
import math
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from agents.mpo.presets import PRESETS  # pylint: disable=g-import-not-at-top
from experiments.collect_infer import _agent_override  # pylint: disable=g-import-not-at-top
from experiments.learning_benchmark import _csv_list  # pylint: disable=g-import-not-at-top
from experiments.plot_run import new_figure, read_csv, save, wall_clock  # pylint: disable=g-import-not-at-top

BENCHMARKS = ('actor', 'replay', 'learner', 'scaling', 'e2e')
# The node group whose process environment (launch.program.process_env) each benchmark
# runs under: the actor's single-threaded XLA, or the learner's defaults.
NODE_GROUP = {'actor': 'actor', 'replay': 'learner', 'learner': 'learner'}
TARGETS = {'actor_full': 0.7, 'learner_pipeline': 0.8}
FIGURE_FIELDS = ('benchmark', 'preset', 'figure', 'unit', 'value', 'ceiling_figure', 'ceiling',
                 'ratio', 'ratio_min', 'ratio_max', 'target', 'meets_target', 'repeats',
                 'seconds', 'load_1m')
SAMPLE_FIELDS = ('benchmark', 'preset', 'figure', 'repeat', 'value', 'ceiling', 'ratio',
                 'load_1m')
SCALING_FIELDS = ('num_actors', 'env_steps_per_s', 'learner_steps_per_s', 'env_speedup',
                  'learner_speedup', 'env_vs_rate_limit', 'window_s', 'rate_source', 'actor_steps',
                  'learner_steps', 'peak_rss_mb_total', 'wall_s', 'exit_code', 'load_1m')
RSS_FIELDS = ('num_actors', 'node', 'peak_rss_mb')
E2E_FIELDS = ('source', 'task', 'target', 'reached', 'seconds_to_target', 'env_steps_at_target',
              'learner_steps_at_target', 'return_at_target', 'previous_eval_seconds',
              'previous_eval_return', 'best_return', 'evaluations', 'launcher_seconds_to_target')

Rate = Callable[[], float]
Row = Dict[str, Any]


# --- timing -------------------------------------------------------------------


def load_1m() -> float:
  return float(os.getloadavg()[0])


def timed_rate(chunk: Callable[[], int], seconds: float, settle: float = 0.0) -> float:
  """Units/s of repeated `chunk()` calls (each returns the units it did) over >= `seconds`.

  `settle` seconds of untimed calls first drain what a background pipeline prefetched
  while something else was timed, so a window starts in steady state.
  """
  end = time.perf_counter() + settle
  while time.perf_counter() < end:
    chunk()
  units, start = 0, time.perf_counter()
  while True:
    units += chunk()
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return units / elapsed


@dataclasses.dataclass
class Series:
  """Per-repeat (value, ceiling) pairs of one figure."""
  figure: str
  unit: str
  ceiling_figure: str
  values: List[float] = dataclasses.field(default_factory=list)
  ceilings: List[float] = dataclasses.field(default_factory=list)
  loads: List[float] = dataclasses.field(default_factory=list)

  @property
  def ratios(self) -> List[float]:
    return [v / c for v, c in zip(self.values, self.ceilings)]


def interleave(ceiling: Rate, figures: Dict[str, Rate], repeats: int) -> Dict[str, List[float]]:
  """Times ceiling, figures..., ceiling, figures..., ceiling (`repeats` rounds).

  Returns {name: [rate per repeat]} with the ceiling of repeat i the mean of the
  ceilings timed just before and just after it, so load drifting during a round
  affects both sides alike.
  """
  out: Dict[str, List[float]] = {name: [] for name in figures}
  ceilings = [ceiling()]
  for _ in range(repeats):
    for name, rate in figures.items():
      out[name].append(rate())
    ceilings.append(ceiling())
  out['__ceiling__'] = [(a + b) / 2.0 for a, b in zip(ceilings, ceilings[1:])]
  return out


def figure_rows(benchmark: str, preset: str, series: Sequence[Series], seconds: float
                ) -> Tuple[List[Row], List[Row]]:
  """(figure rows, sample rows): medians per figure, and every repeat."""
  rows, samples = [], []
  for s in series:
    ratios = s.ratios
    target = TARGETS.get(s.figure)
    ratio = statistics.median(ratios)
    rows.append({
        'benchmark': benchmark, 'preset': preset, 'figure': s.figure, 'unit': s.unit,
        'value': statistics.median(s.values), 'ceiling_figure': s.ceiling_figure,
        'ceiling': statistics.median(s.ceilings), 'ratio': ratio, 'ratio_min': min(ratios),
        'ratio_max': max(ratios), 'target': target,
        'meets_target': '' if target is None else ('yes' if ratio >= target else 'no'),
        'repeats': len(ratios), 'seconds': seconds, 'load_1m': statistics.median(s.loads)})
    for i, (v, c) in enumerate(zip(s.values, s.ceilings)):
      samples.append({'benchmark': benchmark, 'preset': preset, 'figure': s.figure, 'repeat': i,
                      'value': v, 'ceiling': c, 'ratio': v / c, 'load_1m': s.loads[i]})
  return rows, samples


def measure(ceiling: Rate, figures: Dict[str, Rate], repeats: int, units: Dict[str, str],
            ceiling_name: str) -> List[Series]:
  """Interleaved timings of `figures` against one ceiling, as Series."""
  before = load_1m()
  rates = interleave(ceiling, figures, repeats)
  load = (before + load_1m()) / 2.0
  return [Series(name, units[name], ceiling_name, rates[name], rates['__ceiling__'],
                 [load] * repeats) for name in figures]


# --- output -------------------------------------------------------------------


def _cell(x: Any) -> str:
  if x is None:
    return ''
  if isinstance(x, float):
    if not math.isfinite(x):
      return ''
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f'{x:.6g}'
  return str(x)


def write_csv(path: pathlib.Path, fields: Sequence[str], rows: Iterable[Row]) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(fields))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _cell(row.get(k)) for k in fields})
  return path


def print_table(rows: Sequence[Row], columns: Sequence[str]) -> None:
  cells = [[_cell(r.get(c)) for c in columns] for r in rows]
  widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
  print('  '.join(c.ljust(w) for c, w in zip(columns, widths)))
  for row in cells:
    print('  '.join(v.ljust(w) for v, w in zip(row, widths)))
  sys.stdout.flush()


def plot_ratios(rows: Sequence[Row], path: pathlib.Path, title: str) -> pathlib.Path:
  """Horizontal bars: median ratio per figure, min-max whiskers, target marks."""
  fig, (ax,) = new_figure(width=7.0, height=0.5 * len(rows) + 1.5)
  labels = [f'{r["figure"]} ({r["preset"]})' for r in rows]
  y = np.arange(len(rows))[::-1]
  ratio = np.array([r['ratio'] for r in rows])
  err = np.array([[r['ratio'] - r['ratio_min'] for r in rows],
                  [r['ratio_max'] - r['ratio'] for r in rows]])
  ax.barh(y, ratio, xerr=err, color='tab:blue', alpha=0.7, capsize=3)
  for yi, r in zip(y, rows):
    if r['target'] is not None:
      ax.plot([r['target']] * 2, [yi - 0.4, yi + 0.4], color='tab:red', lw=2)
    ax.text(max(r['ratio'], r['ratio_max']), yi, f'  {r["ratio"]:.2f}', va='center')
  ax.axvline(1.0, color='grey', lw=1, ls='--')
  ax.set_yticks(y, labels)
  ax.set(xlabel='ratio to ceiling (median; whiskers min-max; red: target)', title=title)
  return save(fig, path)


def _report(out: pathlib.Path, name: str, rows: List[Row], samples: List[Row]) -> List[Row]:
  write_csv(out / f'{name}.csv', FIGURE_FIELDS, rows)
  write_csv(out / f'{name}_samples.csv', SAMPLE_FIELDS, samples)
  plot_ratios(rows, out / f'{name}.png', f'{name} throughput, each against its ceiling')
  print_table(rows, ('preset', 'figure', 'value', 'unit', 'ceiling_figure', 'ceiling', 'ratio',
                     'ratio_min', 'ratio_max', 'target', 'meets_target', 'load_1m'))
  return rows


# --- in-process pieces ----------------------------------------------------------


def make_builder(task: str, preset: str, agent: Dict[str, Any]):
  """The project's MPOBuilder for `task` with a preset and overrides (no rate limiting:
  nothing here waits for a learner to sample)."""
  from acme import specs
  from agents.mpo.builder import MPOBuilder
  from environments.suite import make_environment
  config = _config(preset, agent, {'replay.samples_per_insert': None})
  spec = specs.make_environment_spec(make_environment(task, seed=0))
  return MPOBuilder(config, spec)


def _config(preset: str, *layers: Dict[str, Any]):
  """MPOConfig of a preset with override layers (dotted, nested or old flat names)."""
  from agents.common.config import merge_overrides
  from agents.mpo.config import MPOConfig
  return MPOConfig.from_dict(merge_overrides(MPOConfig, PRESETS[preset], *layers))


def configured_spi(preset: str, agent: Dict[str, Any]) -> Optional[float]:
  """The samples_per_insert a real run of this preset uses."""
  return _config(preset, agent).replay.samples_per_insert


def make_env(task: str, seed: int, max_episode_steps: Optional[int]):
  """The task as actor nodes make it; optionally with shorter episodes (tests)."""
  from environments.suite import make_environment
  env = make_environment(task, seed=seed)
  if max_episode_steps:
    from acme import wrappers
    env = wrappers.StepLimitWrapper(env, step_limit=max_episode_steps)
  return env


class LocalVariableSource:
  """A learner's variables served in-process, as LearnerWorker.get_variables serves them."""

  def __init__(self, learner):
    self._learner = learner

  def get_variables(self, names: Sequence[str]) -> List[Any]:
    from launch.nodes.learner import LEARNER_STEPS
    return [self._learner.steps if n == LEARNER_STEPS else self._learner.get_variables([n])[0]
            for n in names]


class ConstantActor:
  """An acme Actor with a constant action: the EnvironmentLoop's own overhead."""

  def __init__(self, action: np.ndarray):
    self._action = action

  def select_action(self, observation):
    del observation
    return self._action

  def observe_first(self, timestep):
    pass

  def observe(self, action, next_timestep):
    pass

  def update(self, wait: bool = False):
    pass


class ReplayServer:
  """An in-process Reverb server with the builder's tables, and a client to it."""

  def __init__(self, builder):
    import reverb
    self.server = reverb.Server(builder.make_replay_tables(), port=None)
    self.address = f'localhost:{self.server.port}'
    self.client = reverb.Client(self.address)

  def inserts(self) -> int:
    """Items inserted into the replay table so far."""
    from agents.replay_pipeline import REPLAY_TABLE
    info = self.client.server_info()[REPLAY_TABLE]
    return int(info.rate_limiter_info.insert_stats.completed)

  def size(self) -> int:
    from agents.replay_pipeline import REPLAY_TABLE
    return int(self.client.server_info()[REPLAY_TABLE].current_size)

  def stop(self) -> None:
    self.server.stop()


def constant_action(env) -> np.ndarray:
  spec = env.action_spec()
  return ((spec.minimum + spec.maximum) / 2.0).astype(spec.dtype)


def bare_episode(env, action: np.ndarray) -> Callable[[], int]:
  """One episode of env.step with a constant action; returns its steps."""

  def run() -> int:
    timestep, steps = env.reset(), 0
    while not timestep.last():
      timestep = env.step(action)
      steps += 1
    return steps

  return run


def record_episode(env, seed: int):
  """(first timestep, [(action, timestep)]) of one episode with uniform random actions."""
  spec = env.action_spec()
  rng = np.random.default_rng(seed)
  first = env.reset()
  steps, timestep = [], first
  while not timestep.last():
    action = rng.uniform(spec.minimum, spec.maximum).astype(spec.dtype)
    timestep = env.step(action)
    steps.append((action, timestep))
  return first, steps


def adder_episode(adder, episode) -> Callable[[], None]:
  """Feeds a recorded episode through an adder, as an actor's observe calls would."""
  first, steps = episode

  def run() -> None:
    adder.add_first(first)
    for action, timestep in steps:
      adder.add(action, timestep)

  return run


def fill_replay(replay: ReplayServer, builder, episode, items: int) -> int:
  """Writes recorded episodes through the builder's adder until the table holds `items`."""
  adder = builder.make_adder(replay.client)
  feed = adder_episode(adder, episode)
  while replay.size() < items:
    feed()
  return replay.size()


# --- benchmarks ---------------------------------------------------------------


def bench_actor(out: pathlib.Path, task: str, preset: str, agent: Dict[str, Any], seconds: float,
                repeats: int, max_episode_steps: Optional[int] = None, seed: int = 1) -> List[Row]:
  """Actor env steps/s (and partial loops) against bare stepping of the same task."""
  from agents.mpo.actor import prefer_inline_cpu_dispatch
  # As in an actor node, whose actor is the first to use JAX (here, before the learner
  # that only provides the initial parameters starts JAX with its default dispatch).
  prefer_inline_cpu_dispatch()
  builder = make_builder(task, preset, agent)
  replay = ReplayServer(builder)
  store_dir = tempfile.mkdtemp(prefix='throughput_store_')
  try:
    series = _actor_series(builder, replay, store_dir, task, seconds, repeats, max_episode_steps,
                           seed)
  finally:
    replay.stop()
    shutil.rmtree(store_dir, ignore_errors=True)
  rows, samples = figure_rows('actor', preset, series, seconds)
  return _report(out, 'actor', rows, samples)


def _actor_series(builder, replay: 'ReplayServer', store_dir: str, task: str, seconds: float,
                  repeats: int, max_episode_steps: Optional[int], seed: int) -> List[Series]:
  """The actor benchmark's timings; its adders are gone when it returns (a server with
  live writers takes seconds to stop)."""
  import acme
  from acme.utils import counting
  from acme.utils import loggers
  from launch.nodes.learner import LEARNER_STEPS
  from launch.store.episodes import EpisodeStore
  from launch.store.recorder import EpisodeRecorder

  learner = builder.make_learner(iter(()), seed=0, logger=loggers.NoOpLogger())
  source = LocalVariableSource(learner)
  bare_env = make_env(task, seed, max_episode_steps)
  action = constant_action(bare_env)
  writers = []

  def loop(actor_adder: bool, store: bool, constant: bool = False) -> Rate:
    env = make_env(task, seed, max_episode_steps)
    observers = []
    if constant:
      actor = ConstantActor(action)
    else:
      # As ActorWorker builds it: stochastic policy, periodic variable refresh.
      adder = builder.make_adder(replay.client) if actor_adder else None
      actor = builder.make_actor(source, adder, seed=seed, version_name=LEARNER_STEPS)
      if store:
        writer = EpisodeStore(store_dir).writer(f'actor_{len(writers)}')
        writers.append(writer)
        observers.append(EpisodeRecorder(
            writer, metadata={'source': 'benchmark', 'task': task, 'seed': seed},
            policy_version=lambda a=actor: a.policy_version))
    env_loop = acme.EnvironmentLoop(env, actor, counter=counting.Counter(),
                                    logger=loggers.NoOpLogger(), label='actor',
                                    observers=observers)
    episode = lambda: int(env_loop.run_episode()['episode_length'])
    episode()  # Compiles the policy and fetches the parameters.
    return lambda: timed_rate(episode, seconds)

  try:
    figures = {
        'loop_constant': loop(False, False, constant=True),
        'actor_no_adder': loop(False, False),
        'actor_no_store': loop(True, False),
        'actor_full': loop(True, True),
    }
    run_bare = bare_episode(bare_env, action)
    run_bare()
    return measure(lambda: timed_rate(run_bare, seconds), figures, repeats,
                   {n: 'env_steps/s' for n in figures}, 'env_bare')
  finally:
    for writer in writers:
      writer.close()


def learner_in_memory(builder, batch, seed: int = 0):
  """An MPOLearner stepping on one batch held in memory, warmed up (compiled)."""
  from acme.utils import loggers
  learner = builder.make_learner(itertools.repeat(batch), seed=seed, logger=loggers.NoOpLogger())
  for _ in range(3):
    learner.step()
  return learner


def _one_step(learner) -> Callable[[], int]:
  def step() -> int:
    learner.step()
    return 1
  return step


def bench_replay(out: pathlib.Path, task: str, preset: str, agent: Dict[str, Any],
                 seconds: float, repeats: int, fill: int, settle: float = 0.5,
                 max_episode_steps: Optional[int] = None, seed: int = 1) -> List[Row]:
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
    series.append(Series('adder_vs_insert_need', 'items/s', f'insert_need_at_spi_{spi:g}',
                         list(inserts.values), [c / spi for c in samples.ceilings],
                         inserts.loads))
  rows, sample_rows = figure_rows('replay', preset, series, seconds)
  return _report(out, 'replay', rows, sample_rows)


def _insert_series(builder, replay: ReplayServer, episode, seconds: float,
                   repeats: int) -> Series:
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
  # The adder's own flush policy (acme's default, which the builder keeps).
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
    (series,) = measure(lambda: timed_rate(raw_chunk, seconds),
                        {'adder_inserts': lambda: timed_rate(adder_chunk, seconds)}, repeats,
                        {'adder_inserts': 'items/s'}, 'raw_writer_inserts')
  finally:
    writer.close()
  return series


def _sample_series(builder, replay: ReplayServer, seconds: float, repeats: int,
                   settle: float) -> Series:
  """Samples/s the builder's dataset iterator delivers against the samples/s an
  in-memory learner consumes (steps/s x batch size)."""
  batch_size = builder.config.replay.batch_size
  iterator = builder.make_dataset_iterator(replay.address)
  learner_step = _one_step(learner_in_memory(builder, next(iterator)))

  def next_batch() -> int:
    next(iterator)
    return batch_size

  def consumed() -> float:
    return timed_rate(learner_step, seconds, settle) * batch_size

  (series,) = measure(consumed, {'dataset_samples': lambda: timed_rate(next_batch, seconds,
                                                                       settle)},
                      repeats, {'dataset_samples': 'samples/s'}, 'learner_samples_in_memory')
  return series


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
  return _report(out, 'learner', rows, samples)


def _learner_series(builder, replay: ReplayServer, seconds: float, repeats: int,
                    settle: float) -> List[Series]:
  """One learner, one compiled update: only the iterator differs between the windows."""
  iterator = builder.make_dataset_iterator(replay.address)
  batch = next(iterator)
  learner = learner_in_memory(builder, batch)
  step = _one_step(learner)

  def on(it) -> Rate:
    def rate() -> float:
      learner.set_iterator(it)
      return timed_rate(step, seconds, settle)
    return rate

  on(iterator)()  # Warms up the pipeline (connections, prefetch, autotuning).
  return measure(on(itertools.repeat(batch)), {'learner_pipeline': on(iterator)}, repeats,
                 {'learner_pipeline': 'steps/s'}, 'learner_in_memory')


# --- scaling: the real program ------------------------------------------------


def _peak_rss_kb(pid: int) -> Optional[int]:
  """The kernel's high-water mark of the process's RSS (VmHWM), in kB."""
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1])
  except OSError:
    return None
  return None


def node_name(pid: int, nodes_dir: pathlib.Path) -> Optional[str]:
  """'actor_0', 'learner_0'... from the per-node log file the process writes its stdout to."""
  try:
    target = pathlib.Path(os.readlink(f'/proc/{pid}/fd/1'))
    rel = target.relative_to(nodes_dir)
  except (OSError, ValueError):
    return None
  # <run>/logs/nodes/<launch time>/<group>/<task id>
  parts = rel.parts[1:] if len(rel.parts) > 2 else rel.parts
  return '_'.join(parts)


class RssSampler:
  """Peak RSS per node of a launcher's process tree, sampled by the caller."""

  def __init__(self, launcher_pid: int, run_dir: pathlib.Path):
    self.pid = launcher_pid
    self.nodes_dir = run_dir / 'logs' / 'nodes'
    self.peak_mb: Dict[str, float] = {}
    self.pids: Dict[int, str] = {}

  def sample(self) -> None:
    import psutil
    try:
      root = psutil.Process(self.pid)
      procs = [root] + root.children(recursive=True)
    except psutil.Error:
      return
    for p in procs:
      try:
        rss_kb = max(p.memory_info().rss // 1024, _peak_rss_kb(p.pid) or 0)
      except psutil.Error:
        continue
      name = self.pids.get(p.pid)
      if name is None:
        name = 'launcher' if p.pid == self.pid else node_name(p.pid, self.nodes_dir)
        if name is None:
          continue  # Not yet redirected (just forked); named on a later sample.
        self.pids[p.pid] = name
      self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), rss_kb / 1024.0)


def _div(a: float, b: float) -> float:
  return a / b if b and math.isfinite(b) else math.nan


def read_counts(run_dir: pathlib.Path) -> Optional[Dict[str, float]]:
  try:
    return json.loads((run_dir / 'counter.json').read_text()).get('counts', {})
  except (OSError, ValueError):
    return None


class ReplayProbe:
  """Insert and sample counts of a running program's replay table, at any moment.

  counter.json only moves when an actor finishes an episode (acme's loop counts steps
  per episode) and is saved every 5 s; the table counts every item as it arrives.
  """

  def __init__(self, run_dir: pathlib.Path):
    self._book = run_dir / 'addresses.json'
    self._client = None

  def counts(self) -> Optional[Dict[str, float]]:
    if self._client is None and not self._book.exists():
      return None  # Not launched yet.
    import reverb
    from agents.replay_pipeline import REPLAY_TABLE
    try:
      if self._client is None:
        self._client = reverb.Client(json.loads(self._book.read_text())['replay'])
      info = self._client.server_info(timeout=2)[REPLAY_TABLE].rate_limiter_info
    except Exception:  # pylint: disable=broad-except
      return None  # Not started yet, or already stopped.
    return {'replay_inserts': info.insert_stats.completed,
            'replay_samples': info.sample_stats.completed}


def steady_rate(times: Sequence[float], counts: Sequence[float]) -> Tuple[float, float]:
  """(rate, window seconds) between the 2nd and the last change of a polled count.

  The counter file changes every few seconds; timing from the first change after
  the count started skips start-up (imports, compilation, min replay size).
  """
  changes = [(t, c) for i, (t, c) in enumerate(zip(times, counts))
             if c > 0 and (i == 0 or c != counts[i - 1])]
  if len(changes) < 3:
    return math.nan, 0.0
  (t0, c0), (t1, c1) = changes[1], changes[-1]
  return (c1 - c0) / (t1 - t0), t1 - t0


def window_rates(series: Sequence[Tuple[float, Dict[str, float]]], batch_size: int,
                 settle_s: float = 10.0) -> Row:
  """Steady-state env and learner steps/s of a polled run.

  From the replay table when it was reachable: env steps ~ inserts (one item per step,
  plus n-1 at each episode's end), learner steps = samples / batch size, over the time
  from `settle_s` after the learner's first sample (past the rate limiter's start-up
  slack) to the last poll. Else from counter.json (see `steady_rate`).
  """
  replay = [(t, c) for t, c in series if 'replay_samples' in c]
  start = next((t for t, c in replay if c['replay_samples'] > 0), None)
  if start is not None:
    points = [(t, c) for t, c in replay if t >= start + settle_s]
    if len(points) >= 2 and points[-1][0] > points[0][0]:
      (t0, c0), (t1, c1) = points[0], points[-1]
      dt = t1 - t0
      return {'env_steps_per_s': (c1['replay_inserts'] - c0['replay_inserts']) / dt,
              'learner_steps_per_s': (c1['replay_samples'] - c0['replay_samples']) / dt /
                                     batch_size,
              'window_s': dt, 'rate_source': 'replay'}
  times = [t for t, _ in series]
  env, window = steady_rate(times, [c.get('actor_steps', 0) for _, c in series])
  learner, _ = steady_rate(times, [c.get('learner_steps', 0) for _, c in series])
  return {'env_steps_per_s': env, 'learner_steps_per_s': learner, 'window_s': window,
          'rate_source': 'counter'}


def collect_infer_argv(run_dir: pathlib.Path, task: str, num_actors: int, seconds: float,
                       preset: str, agent: Dict[str, Any]) -> List[str]:
  argv = [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', str(run_dir),
          '--task', task, '--num_actors', str(num_actors), '--max_seconds', str(seconds),
          '--preset', preset]
  for key, value in agent.items():
    argv += ['--agent', f'{key}={json.dumps(value)}']
  return argv


def run_program(argv: List[str], run_dir: pathlib.Path, timeout_s: float,
                poll_s: float = 1.0, until: Optional[Callable[[], bool]] = None,
                probe_replay: bool = True
                ) -> Tuple[int, List[Tuple[float, Dict[str, float]]], RssSampler, float]:
  """Runs a collect_infer command, polling its counts and RSS every `poll_s`.

  Ctrl-C (SIGINT) stops it cleanly when `until()` turns true or at `timeout_s`.
  Returns (exit code, [(seconds, counter.json counts + replay counts)], RSS sampler,
  wall seconds).
  """
  run_dir.mkdir(parents=True, exist_ok=True)
  log = open(run_dir / 'launcher.log', 'w')
  start = time.time()
  proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                          cwd=pathlib.Path(__file__).resolve().parents[1])
  sampler = RssSampler(proc.pid, run_dir)
  probe = ReplayProbe(run_dir) if probe_replay else None
  series: List[Tuple[float, Dict[str, float]]] = []
  interrupted_at = None
  try:
    while proc.poll() is None:
      sampler.sample()
      counts = {**(read_counts(run_dir) or {}), **((probe and probe.counts()) or {})}
      now = time.time() - start
      if counts:
        series.append((now, counts))
      if interrupted_at is None and (now > timeout_s or (until is not None and until())):
        proc.send_signal(signal.SIGINT)
        interrupted_at = now
      elif interrupted_at is not None and now > interrupted_at + 90:
        _kill_tree(sampler)
      time.sleep(poll_s)
  except KeyboardInterrupt:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=90)
    raise
  finally:
    log.close()
  counts = read_counts(run_dir)
  if counts:
    series.append((time.time() - start, counts))
  return proc.returncode, series, sampler, time.time() - start


def _kill_tree(sampler: RssSampler) -> None:
  """Last resort for a launcher that ignored Ctrl-C: the processes it started, by pid."""
  for pid in list(sampler.pids) + [sampler.pid]:
    try:
      os.kill(pid, signal.SIGKILL)
    except OSError:
      pass


def bench_scaling(out: pathlib.Path, task: str, preset: str, agent: Dict[str, Any],
                  actor_counts: Sequence[int], seconds: float, keep_runs: bool = False,
                  program: Optional[Callable[[pathlib.Path, int], List[str]]] = None,
                  poll_s: float = 1.0, settle_s: float = 10.0) -> List[Row]:
  """The real program with each actor count: env and learner steps/s, peak RSS per node.

  `program(run_dir, num_actors)` gives the command (tests pass a stand-in).
  """
  config = _config(preset, agent)
  program = program or (lambda d, n: collect_infer_argv(d, task, n, seconds, preset, agent))
  root = pathlib.Path(tempfile.mkdtemp(prefix='throughput_scaling_'))
  rows, rss_rows = [], []
  try:
    for n in actor_counts:
      run_dir = root / f'actors_{n}'
      load = load_1m()
      print(f'[scaling] {n} actor(s) for {seconds:g}s in {run_dir}', flush=True)
      code, series, sampler, wall = run_program(program(run_dir, n), run_dir,
                                                timeout_s=seconds + 240, poll_s=poll_s)
      if code != 0:
        tail = (run_dir / 'launcher.log').read_text(errors='replace')[-3000:]
        print(f'[scaling] exit code {code}; launcher log tail:\n{tail}', flush=True)
      rates = window_rates(series, config.replay.batch_size, settle_s)
      final = read_counts(run_dir) or {}
      # The env steps/s the sample-to-insert limiter lets through at this learner speed.
      spi = config.replay.samples_per_insert
      limit = (rates['learner_steps_per_s'] * config.replay.batch_size / spi
               if spi else math.nan)
      rows.append({'num_actors': n, **rates,
                   'env_vs_rate_limit': _div(rates['env_steps_per_s'], limit),
                   'actor_steps': final.get('actor_steps'),
                   'learner_steps': final.get('learner_steps'),
                   'peak_rss_mb_total': sum(sampler.peak_mb.values()), 'wall_s': wall,
                   'exit_code': code, 'load_1m': (load + load_1m()) / 2.0})
      rss_rows += [{'num_actors': n, 'node': node, 'peak_rss_mb': mb}
                   for node, mb in sorted(sampler.peak_mb.items())]
  finally:
    if keep_runs:
      print(f'[scaling] run directories kept in {root}', flush=True)
    else:
      shutil.rmtree(root, ignore_errors=True)
  base = rows[0] if rows else {}
  for row in rows:
    row['env_speedup'] = _div(row['env_steps_per_s'], base['env_steps_per_s'])
    row['learner_speedup'] = _div(row['learner_steps_per_s'], base['learner_steps_per_s'])
  write_csv(out / 'scaling.csv', SCALING_FIELDS, rows)
  write_csv(out / 'scaling_rss.csv', RSS_FIELDS, rss_rows)
  plot_scaling(rows, rss_rows, out / 'scaling.png', task)
  print_table(rows, SCALING_FIELDS)
  print_table(rss_rows, RSS_FIELDS)
  return rows


def plot_scaling(rows: Sequence[Row], rss_rows: Sequence[Row], path: pathlib.Path,
                 task: str) -> pathlib.Path:
  fig, (ax, ax_mem) = new_figure(ncols=2, width=5.5)
  n = [r['num_actors'] for r in rows]
  ax.plot(n, [r['env_steps_per_s'] for r in rows], marker='o', label='env steps / s')
  ax.plot(n, [r['learner_steps_per_s'] for r in rows], marker='s', label='learner steps / s')
  ax.set(xlabel='actors', ylabel='steps / s', title='steady-state throughput', xticks=n)
  ax.legend(loc='best')
  nodes = sorted({r['node'] for r in rss_rows}, key=lambda s: (s.split('_')[0], len(s), s))
  width = 0.8 / max(1, len(n))
  for i, count in enumerate(n):
    mb = {r['node']: r['peak_rss_mb'] for r in rss_rows if r['num_actors'] == count}
    ax_mem.bar(np.arange(len(nodes)) + i * width, [mb.get(k, 0.0) for k in nodes], width,
               label=f'{count} actor(s)')
  ax_mem.set_xticks(np.arange(len(nodes)) + width * (len(n) - 1) / 2, nodes, rotation=45,
                    ha='right')
  ax_mem.set(ylabel='peak RSS (MiB)', title='peak memory per node')
  ax_mem.legend(loc='best')
  fig.suptitle(f'{task}: scaling with actors')
  return save(fig, path)


# --- e2e ------------------------------------------------------------------------


def evaluator_csv(path: pathlib.Path) -> pathlib.Path:
  """A CSV file, a run directory (logs/evaluator/logs.csv) or a folder with evaluator.csv."""
  for candidate in (path, path / 'logs' / 'evaluator' / 'logs.csv', path / 'evaluator.csv'):
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(f'no evaluator log at {path} (tried logs/evaluator/logs.csv and '
                          'evaluator.csv)')


def time_to_target(evals: Dict[str, np.ndarray], target: float) -> Row:
  """When the evaluator's mean return first reached `target` (wall-clock summed over resumes)."""
  for need in ('mean_return', 'elapsed_s'):
    if need not in evals:
      raise ValueError(f'the evaluator log has no {need!r} column')
  ret = evals['mean_return']
  wall = wall_clock(evals['elapsed_s'])
  hits = np.flatnonzero(np.isfinite(ret) & (ret >= target))
  row = {'target': target, 'reached': 'yes' if len(hits) else 'no', 'evaluations': len(ret),
         'best_return': float(np.nanmax(ret)) if np.isfinite(ret).any() else math.nan,
         'seconds_to_target': math.nan, 'env_steps_at_target': math.nan,
         'learner_steps_at_target': math.nan, 'return_at_target': math.nan,
         'previous_eval_seconds': math.nan, 'previous_eval_return': math.nan}
  if len(hits):
    i = int(hits[0])
    if i > 0:
      # The return crossed the target between this evaluation and the next: the resolution.
      row.update(previous_eval_seconds=float(wall[i - 1]), previous_eval_return=float(ret[i - 1]))
    row.update(seconds_to_target=float(wall[i]), return_at_target=float(ret[i]),
               env_steps_at_target=float(evals.get('actor_steps', [math.nan] * len(ret))[i]),
               learner_steps_at_target=float(evals.get('learner_steps',
                                                       [math.nan] * len(ret))[i]))
  return row


def bench_e2e(out: pathlib.Path, task: str, target: float, from_run: Optional[str] = None,
              run_dir: Optional[str] = None, max_seconds: float = 3600.0, preset: str = 'cpu',
              agent: Optional[Dict[str, Any]] = None) -> List[Row]:
  """Seconds to the target return: from an existing log, or a run with the defaults
  (stopped with Ctrl-C once the target is logged, or at `max_seconds`)."""
  launcher_s = math.nan
  if from_run:
    source = evaluator_csv(pathlib.Path(from_run))
  else:
    fresh = pathlib.Path(run_dir or tempfile.mkdtemp(prefix='throughput_e2e_'))
    source = fresh / 'logs' / 'evaluator' / 'logs.csv'
    reached_at: List[float] = []
    start = time.time()

    def reached() -> bool:
      ret = read_csv(source).get('mean_return', np.array([]))
      if not reached_at and (ret >= target).any():
        reached_at.append(time.time() - start)
      return bool(reached_at)

    argv = [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', str(fresh),
            '--task', task, '--preset', preset]
    for key, value in (agent or {}).items():
      argv += ['--agent', f'{key}={json.dumps(value)}']
    print(f'[e2e] {" ".join(argv[1:])} (until mean return {target:g})', flush=True)
    code, _, _, _ = run_program(argv, fresh, timeout_s=max_seconds, poll_s=5.0, until=reached,
                                probe_replay=False)
    print(f'[e2e] exit code {code}; run directory {fresh}', flush=True)
    launcher_s = reached_at[0] if reached_at else math.nan
  evals = read_csv(source)
  row = {'source': str(source), 'task': task, **time_to_target(evals, target),
         'launcher_seconds_to_target': launcher_s}
  write_csv(out / 'e2e.csv', E2E_FIELDS, [row])
  plot_e2e(evals, row, out / 'e2e.png', task)
  print_table([row], E2E_FIELDS[1:])
  return [row]


def plot_e2e(evals: Dict[str, np.ndarray], row: Row, path: pathlib.Path, task: str):
  fig, (ax,) = new_figure()
  ax.plot(wall_clock(evals['elapsed_s']), evals['mean_return'], marker='o', markersize=3,
          label='evaluation mean return')
  ax.axhline(row['target'], color='tab:red', ls='--', lw=1, label=f'target {row["target"]:g}')
  if row['reached'] == 'yes':
    ax.axvline(row['seconds_to_target'], color='tab:green', lw=1,
               label=f'reached at {row["seconds_to_target"]:.0f} s')
  ax.set(xlabel='wall-clock seconds (evaluator)', ylabel='return', title=f'{task}: end to end')
  ax.set_xlim(left=0)
  ax.legend(loc='best')
  return save(fig, path)


# --- command line ---------------------------------------------------------------


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('benchmark', choices=BENCHMARKS + ('all',))
  p.add_argument('--out', default='bench_out/throughput', help='where CSV and PNG files go')
  p.add_argument('--task', default='cartpole:swingup')
  p.add_argument('--preset', default='cpu', choices=sorted(PRESETS),
                 help='agent sizes for actor, replay and scaling (default: cpu)')
  p.add_argument('--presets', type=_csv_list(str), default=['cpu'],
                 help='learner benchmark: comma-separated presets (e.g. cpu,published)')
  p.add_argument('--agent', action='append', default=[], type=_agent_override,
                 metavar='FIELD=VALUE',
                 help='MPO config override, e.g. --agent replay.batch_size=64')
  p.add_argument('--seconds', type=float, default=3.0, help='length of one timed window')
  p.add_argument('--repeats', type=int, default=5, help='interleaved rounds; median reported')
  p.add_argument('--settle', type=float, default=0.5,
                 help='untimed seconds before a window of a prefetching pipeline')
  p.add_argument('--fill', type=int, default=5000, help='replay items before sampling')
  p.add_argument('--max_episode_steps', type=int, default=None,
                 help='cap episode length for actor/replay/learner (quick checks only)')
  p.add_argument('--scaling_actors', type=_csv_list(int), default=[1, 2, 4])
  p.add_argument('--scaling_seconds', type=float, default=90.0,
                 help='--max_seconds of each scaling run')
  p.add_argument('--keep_runs', action='store_true', help='keep the scaling run directories')
  p.add_argument('--from_run', default=None,
                 help='e2e: a run directory or evaluator CSV to read instead of running')
  p.add_argument('--e2e_target', type=float, default=800.0)
  p.add_argument('--e2e_run_dir', default=None,
                 help='e2e: run directory of the run (default: a new temporary one; an '
                      'existing one resumes, its time summed over launches)')
  p.add_argument('--e2e_max_seconds', type=float, default=3600.0)
  args = p.parse_args(argv)
  for preset in args.presets:
    if preset not in PRESETS:
      p.error(f'--presets: unknown preset {preset!r}; choose from {sorted(PRESETS)}')
  if args.seconds <= 0 or args.repeats < 1:
    p.error('--seconds must be > 0 and --repeats >= 1')
  return args


def run_one(args) -> List[Row]:
  out = pathlib.Path(args.out)
  agent = dict(args.agent)
  if args.benchmark == 'actor':
    return bench_actor(out, args.task, args.preset, agent, args.seconds, args.repeats,
                       args.max_episode_steps)
  if args.benchmark == 'replay':
    return bench_replay(out, args.task, args.preset, agent, args.seconds, args.repeats,
                        args.fill, args.settle, args.max_episode_steps)
  if args.benchmark == 'learner':
    return bench_learner(out, args.task, args.presets, agent, args.seconds, args.repeats,
                         args.fill, args.settle, args.max_episode_steps)
  if args.benchmark == 'scaling':
    return bench_scaling(out, args.task, args.preset, agent, args.scaling_actors,
                         args.scaling_seconds, args.keep_runs)
  return bench_e2e(out, args.task, args.e2e_target, args.from_run, args.e2e_run_dir,
                   args.e2e_max_seconds, args.preset, agent)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.benchmark == 'all':
    # One process per benchmark: each gets its node's process environment, set before
    # JAX starts (thread settings cannot change later in a process).
    rest = list(argv)
    rest.remove('all')
    names = [b for b in BENCHMARKS if b != 'e2e' or args.from_run]
    codes = [subprocess.call([sys.executable, '-m', 'experiments.throughput_benchmark', name]
                             + rest) for name in names]
    return max(codes)
  if args.benchmark in NODE_GROUP:
    from launch.program import process_env
    os.environ.update(process_env(NODE_GROUP[args.benchmark]))
  try:
    run_one(args)
  except (FileNotFoundError, ValueError) as e:
    if args.benchmark != 'e2e':
      raise
    print(f'error: {e}', file=sys.stderr)  # A --from_run without a usable evaluator log.
    return 2
  print(f'[throughput] wrote {args.out}/{args.benchmark}.csv and .png', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
