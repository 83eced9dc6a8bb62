"""CPU time per environment step of actors, against bare stepping (issue 26).

  python -m experiments.throughput.actor_cpu --envs_per_actor 1,2,4,8

On 2 cores shared with the learner, CPU per step is what an actor costs the program; it
also drifts less with other load than the wall-clock rates of `throughput_benchmark
actor`. Process CPU time counts every thread, the in-process Reverb server's included.
Rows: bare (env.step, constant action), single (ActorWorker's acme loop, K=1), batched_k{K}
(BatchedActorWorker's loop), and at the largest K the batched loop without adder or store,
with the store only, and with acme's NStepTransitionAdder or ours only (both into a table
of acme's five columns an item; the preset's own adder packs them). Best of 3 windows.

With --replay_process the server runs in a process of its own, as the program's replay
node does: each row then gives the actor process's CPU and, beside it, the server's for the
same window (the server's side of every insert, which an in-process server adds to the
actor's figure).
"""

import argparse
import os
import tempfile
import time
from typing import Callable, Dict, Optional, Tuple

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

TASK = 'cartpole:swingup'


def cpu_us_per_step(
  chunk: Callable[[], int], steps: int, other: Callable[[], Optional[float]] = lambda: None
) -> Tuple[float, Optional[float]]:
  """Fewest CPU microseconds per step over 3 windows of >= `steps` steps (after one chunk),
  and the microseconds per step of `other` (another process's CPU seconds, or None) in
  that window."""
  chunk()
  best, best_other = float('inf'), None
  for _ in range(3):
    start, other_start, done = time.process_time(), other(), 0
    while done < steps:
      done += chunk()
    spent = (time.process_time() - start) / done
    if spent < best:
      best = spent
      if other_start is not None:
        best_other = 1e6 * (other() - other_start) / done
  return 1e6 * best, best_other


def measure(
  ks, steps: int, replay_process: bool = False
) -> Dict[str, Tuple[float, Optional[float]]]:
  import acme
  from acme import specs
  from acme.adders import reverb as reverb_adders
  from acme.utils import counting, loggers

  from agents.batched_actor import make_batched_actor
  from agents.mpo.actor import prefer_inline_cpu_dispatch
  from agents.nstep_adder import NStepAdder
  from agents.replay_pipeline import ADDER_MAX_IN_FLIGHT_ITEMS, REPLAY_TABLE
  from environments.actions import ExecutedActionActor
  from experiments.throughput.in_process import (
    LocalVariableSource,
    bare_episode,
    constant_action,
    make_builder,
    make_env,
  )
  from experiments.throughput.replay_process import make_replay
  from launch.nodes.batched_loop import BatchedEnvironmentLoop
  from launch.store.episodes import EpisodeStore
  from launch.store.recorder import EpisodeRecorder

  prefer_inline_cpu_dispatch()  # As in an actor node.
  builder = make_builder(TASK, 'cpu', {})
  replay = make_replay(builder, TASK, 'cpu', {}, own_process=replay_process)
  # acme's adder and ours compared on acme's five columns an item (the preset packs them).
  five_columns = {'replay.packed_items': False}
  five = make_builder(TASK, 'cpu', five_columns)
  replay_five = make_replay(five, TASK, 'cpu', five_columns, own_process=replay_process)
  source = LocalVariableSource(builder.make_learner(iter(()), seed=0, logger=loggers.NoOpLogger()))
  store = EpisodeStore(tempfile.mkdtemp(prefix='actor_cpu_'))
  names = iter(range(10**6))
  recorder = lambda: EpisodeRecorder(store.writer(f'w{next(names)}'), {'source': 'bench'})
  c = builder.replay_config
  adders = {
    'builder': lambda: builder.make_adder(replay.client),
    'none': lambda: None,
    'acme': lambda: reverb_adders.NStepTransitionAdder(
      replay_five.client, c.n_step, c.discount, max_in_flight_items=ADDER_MAX_IN_FLIGHT_ITEMS
    ),
    'ours': lambda: NStepAdder(
      replay_five.client, c.n_step, c.discount, REPLAY_TABLE, ADDER_MAX_IN_FLIGHT_ITEMS
    ),
  }

  def batched(k: int, adder: str, store_episodes: bool) -> Callable[[], int]:
    envs = [make_env(TASK, 10 + j, None) for j in range(k)]
    actor = make_batched_actor(
      builder, source, [adders[adder]() for _ in envs], list(range(k)), 'learner_steps'
    )
    observers = [[recorder()] if store_episodes else [] for _ in envs]
    loop = BatchedEnvironmentLoop(
      envs, actor, specs.make_environment_spec(envs[0]).actions, observers=observers
    )

    def chunk() -> int:
      for _ in range(100):
        loop.step()
      return 100 * k

    return chunk

  # Each row with the server's CPU beside it (None for an in-process server).
  per_step = lambda chunk: cpu_us_per_step(chunk, steps, replay.cpu_seconds)
  env = make_env(TASK, 1, None)
  out = {'bare': per_step(bare_episode(env, constant_action(env)))}
  env = make_env(TASK, 2, None)
  actor = builder.make_actor(source, builder.make_adder(replay.client), seed=2)
  loop = acme.EnvironmentLoop(
    env,
    ExecutedActionActor(actor, specs.make_environment_spec(env).actions),
    counter=counting.Counter(),
    logger=loggers.NoOpLogger(),
    observers=[recorder()],
  )
  out['single'] = per_step(lambda: int(loop.run_episode()['episode_length']))
  for k in ks:
    out[f'batched_k{k}'] = per_step(batched(k, 'builder', True))
  k = max(ks)
  for adder, store_episodes in (('none', False), ('none', True), ('acme', False), ('ours', False)):
    name = f'k{k}_adder_{adder}' + ('_store' if store_episodes else '')
    server = replay_five if adder in ('acme', 'ours') else replay
    out[name] = cpu_us_per_step(batched(k, adder, store_episodes), steps, server.cpu_seconds)
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--envs_per_actor', default='1,2,4,8', help='comma-separated K')
  p.add_argument('--steps', type=int, default=2000, help='environment steps a window')
  p.add_argument(
    '--replay_process',
    action='store_true',
    help="the Reverb server in a process of its own, as the program's replay node",
  )
  args = p.parse_args(argv)
  out = measure([int(k) for k in args.envs_per_actor.split(',')], args.steps, args.replay_process)
  bare = out['bare'][0]
  for name, (us, server_us) in out.items():
    line = f'{name:24s} {us:8.1f} us CPU a step   bare/this {bare / us:.2f}'
    if server_us is not None:
      line += f'   replay process {server_us:6.1f} us a step'
    print(line, flush=True)


if __name__ == '__main__':
  main()
