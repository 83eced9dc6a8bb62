"""The actor benchmark: actor env steps/s (and partial loops) against bare env.step."""

import pathlib
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from experiments.throughput.in_process import (
  ConstantActor,
  LocalVariableSource,
  ReplayServer,
  bare_episode,
  constant_action,
  make_builder,
  make_env,
)
from experiments.throughput.replay_process import make_replay
from experiments.throughput.timing import (
  Rate,
  Row,
  Series,
  figure_rows,
  measure,
  report,
  timed_rate,
)


def bench_actor(
  out: pathlib.Path,
  task: str,
  preset: str,
  agent: Dict[str, Any],
  seconds: float,
  repeats: int,
  max_episode_steps: Optional[int] = None,
  seed: int = 1,
  envs_per_actor: Sequence[int] = (),
  pixels=None,
  replay_process: bool = False,
) -> List[Row]:
  """Actor env steps/s (and partial loops) against bare stepping of the same task.

  With `replay_process` the Reverb server runs in a process of its own (as the program's
  replay node), not in the actor's; written as actor_replay_process.csv/png.

  With `pixels` (environments.pixels.PixelSettings) the task is seen through its camera:
  bare stepping renders every frame, so the ratios are a pixel actor's frames per second
  against bare rendering; written as actor_pixels.csv/png.

  For each K in `envs_per_actor`, figure actor_full_k{K}: a batched actor (K
  environments, one policy call a step, an adder and a store writer per environment),
  its steps of all K environments per second against bare stepping of one.
  """
  from agents.mpo.actor import prefer_inline_cpu_dispatch

  # As in an actor node, whose actor is the first to use JAX (here, before the learner
  # that only provides the initial parameters starts JAX with its default dispatch).
  prefer_inline_cpu_dispatch()
  builder = make_builder(task, preset, agent, pixels)
  replay = make_replay(builder, task, preset, agent, pixels, own_process=replay_process)
  store_dir = tempfile.mkdtemp(prefix='throughput_store_')
  try:
    series = _actor_series(
      builder, replay, store_dir, task, seconds, repeats, max_episode_steps, seed, envs_per_actor,
      pixels,
    )  # fmt: skip
  finally:
    replay.stop()
    shutil.rmtree(store_dir, ignore_errors=True)
  name = actor_figure_name(pixels is not None, replay_process)
  rows, samples = figure_rows(name, preset, series, seconds)
  return report(out, name, rows, samples)


def actor_figure_name(pixels: bool, replay_process: bool) -> str:
  """The actor benchmark's CSV/PNG name: actor, actor_pixels, actor[_pixels]_replay_process."""
  return 'actor' + ('_pixels' if pixels else '') + ('_replay_process' if replay_process else '')


def _actor_series(
  builder,
  replay: 'ReplayServer',
  store_dir: str,
  task: str,
  seconds: float,
  repeats: int,
  max_episode_steps: Optional[int],
  seed: int,
  envs_per_actor: Sequence[int] = (),
  pixels=None,
) -> List[Series]:
  """The actor benchmark's timings; its adders are gone when it returns (a server with
  live writers takes seconds to stop)."""
  import acme
  from acme.utils import counting, loggers

  from launch.nodes.learner import LEARNER_STEPS
  from launch.store.episodes import EpisodeStore
  from launch.store.recorder import EpisodeRecorder

  learner = builder.make_learner(iter(()), seed=0, logger=loggers.NoOpLogger())
  source = LocalVariableSource(learner)
  bare_env = make_env(task, seed, max_episode_steps, pixels)
  action = constant_action(bare_env)
  writers = []

  def loop(actor_adder: bool, store: bool, constant: bool = False) -> Rate:
    env = make_env(task, seed, max_episode_steps, pixels)
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
        observers.append(
          EpisodeRecorder(
            writer,
            metadata={'source': 'benchmark', 'task': task, 'seed': seed},
            policy_version=lambda a=actor: a.policy_version,
          )
        )
    env_loop = acme.EnvironmentLoop(
      env,
      actor,
      counter=counting.Counter(),
      logger=loggers.NoOpLogger(),
      label='actor',
      observers=observers,
    )
    episode = lambda: int(env_loop.run_episode()['episode_length'])
    episode()  # Compiles the policy and fetches the parameters.
    return lambda: timed_rate(episode, seconds)

  def batched(k: int) -> Rate:
    """As BatchedActorWorker runs K environments: an adder and a recorder per stream."""
    from acme import specs

    from agents.batched_actor import make_batched_actor
    from launch.nodes.batched_loop import BatchedEnvironmentLoop

    envs = [make_env(task, seed + j, max_episode_steps, pixels) for j in range(k)]
    stream_adders = [builder.make_adder(replay.client) for _ in envs]
    seeds = [seed + j for j in range(k)]
    actor = make_batched_actor(builder, source, stream_adders, seeds, LEARNER_STEPS)
    observers = []
    for j in range(k):
      writer = EpisodeStore(store_dir).writer(f'actor_{len(writers)}')
      writers.append(writer)
      meta = {'source': 'benchmark', 'task': task, 'seed': seeds[j]}
      observers.append([EpisodeRecorder(writer, meta, lambda: actor.policy_version)])
    env_loop = BatchedEnvironmentLoop(
      envs, actor, specs.make_environment_spec(envs[0]).actions, observers=observers
    )

    def steps(n: int = 100) -> int:
      for _ in range(n):
        env_loop.step()
      return n * k

    steps()  # Compiles the policy and fetches the parameters.
    return lambda: timed_rate(steps, seconds)

  try:
    figures = {
      'loop_constant': loop(False, False, constant=True),
      'actor_no_adder': loop(False, False),
      'actor_no_store': loop(True, False),
      'actor_full': loop(True, True),
    }
    for k in envs_per_actor:
      figures[f'actor_full_k{k}'] = batched(k)
    run_bare = bare_episode(bare_env, action)
    run_bare()
    return measure(
      lambda: timed_rate(run_bare, seconds),
      figures,
      repeats,
      {n: 'env_steps/s' for n in figures},
      'env_bare',
    )
  finally:
    for writer in writers:
      writer.close()
