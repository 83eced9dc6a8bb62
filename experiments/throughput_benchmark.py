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
           env.step with a constant action on the same wrapped task. Target >= 0.5.
           Partial loops say where the time goes: loop_constant (EnvironmentLoop, constant
           action), actor_no_adder (+ policy and variable client), actor_no_store (+ adder).
           actor_full_k{K} (--envs_per_actor, default 2,4,8): a batched actor (K
           environments, one policy call a step, an adder and a recorder each), steps of
           all K per second / bare stepping of one. Target >= 0.7. With --replay_process
           the server runs in a process of its own, as in the program (the actor then
           pays only the client's side of each insert): actor_replay_process.csv.
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
           held in memory. Target >= 0.9 (issue 26; issue 7 asked 0.8).
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
import os
import pathlib
import subprocess
import sys
from typing import List

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from agents.mpo.presets import PRESETS  # pylint: disable=g-import-not-at-top
from experiments.learning_benchmark import _csv_list  # pylint: disable=g-import-not-at-top
from experiments.throughput.actor import (  # pylint: disable=g-import-not-at-top
  actor_figure_name,
  bench_actor,
)
from experiments.throughput.e2e import bench_e2e  # pylint: disable=g-import-not-at-top
from experiments.throughput.learner import bench_learner  # pylint: disable=g-import-not-at-top
from experiments.throughput.replay import bench_replay  # pylint: disable=g-import-not-at-top
from experiments.throughput.scaling import bench_scaling  # pylint: disable=g-import-not-at-top
from experiments.throughput.timing import Row  # pylint: disable=g-import-not-at-top
from launch.cli import agent_setting  # pylint: disable=g-import-not-at-top

BENCHMARKS = ('actor', 'replay', 'learner', 'scaling', 'e2e')
# The node group whose process environment (launch.nodes.process.process_env) each benchmark
# runs under: the actor's single-threaded XLA, or the learner's defaults.
NODE_GROUP = {'actor': 'actor', 'replay': 'learner', 'learner': 'learner'}


def parse_args(argv):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('benchmark', choices=BENCHMARKS + ('all',))
  p.add_argument('--out', default='bench_out/throughput', help='where CSV and PNG files go')
  p.add_argument('--task', default='cartpole:swingup')
  p.add_argument(
    '--preset',
    default='cpu',
    choices=sorted(PRESETS),
    help='agent sizes for actor, replay and scaling (default: cpu)',
  )
  p.add_argument(
    '--presets',
    type=_csv_list(str),
    default=['cpu'],
    help='learner benchmark: comma-separated presets (e.g. cpu,published)',
  )
  p.add_argument(
    '--agent',
    action='append',
    default=[],
    type=agent_setting,
    metavar='FIELD=VALUE',
    help='MPO config override, e.g. --agent replay.batch_size=64',
  )
  p.add_argument('--seconds', type=float, default=3.0, help='length of one timed window')
  p.add_argument('--repeats', type=int, default=5, help='interleaved rounds; median reported')
  p.add_argument(
    '--settle',
    type=float,
    default=0.5,
    help='untimed seconds before a window of a prefetching pipeline',
  )
  p.add_argument('--fill', type=int, default=5000, help='replay items before sampling')
  p.add_argument(
    '--max_episode_steps',
    type=int,
    default=None,
    help='cap episode length for actor/replay/learner (quick checks only)',
  )
  p.add_argument(
    '--envs_per_actor',
    type=_csv_list(int),
    default=[2, 4, 8],
    help='actor: the K of the batched-actor figures actor_full_k{K} (K environments, one '
    'policy call a step); empty for none',
  )
  p.add_argument(
    '--pixels',
    action='store_true',
    help='actor: the task through its camera (--pixel_size, --frame_stack, --action_repeat); '
    'bare stepping then renders too: a pixel actor against bare rendering (actor_pixels.csv)',
  )
  p.add_argument(
    '--replay_process',
    action='store_true',
    help="actor: the Reverb server in a process of its own, as the program's replay node "
    "(default: in the actor's process, which then pays for both sides of every insert); "
    'written as actor_replay_process.csv',
  )
  p.add_argument('--pixel_size', type=int, default=64)
  p.add_argument('--frame_stack', type=int, default=3)
  p.add_argument('--action_repeat', type=int, default=1)
  p.add_argument('--scaling_actors', type=_csv_list(int), default=[1, 2, 4])
  p.add_argument(
    '--scaling_seconds', type=float, default=90.0, help='--max_seconds of each scaling run'
  )
  p.add_argument('--keep_runs', action='store_true', help='keep the scaling run directories')
  p.add_argument(
    '--from_run',
    default=None,
    help='e2e: a run directory or evaluator CSV to read instead of running',
  )
  p.add_argument('--e2e_target', type=float, default=800.0)
  p.add_argument(
    '--e2e_run_dir',
    default=None,
    help='e2e: run directory of the run (default: a new temporary one; an '
    'existing one resumes, its time summed over launches)',
  )
  p.add_argument('--e2e_max_seconds', type=float, default=3600.0)
  args = p.parse_args(argv)
  for preset in args.presets:
    if preset not in PRESETS:
      p.error(f'--presets: unknown preset {preset!r}; choose from {sorted(PRESETS)}')
  if args.seconds <= 0 or args.repeats < 1:
    p.error('--seconds must be > 0 and --repeats >= 1')
  return args


def _pixel_settings(args):
  if not args.pixels:
    return None
  from environments.pixels import PixelSettings

  return PixelSettings(
    size=args.pixel_size, frame_stack=args.frame_stack, action_repeat=args.action_repeat
  )


def run_one(args) -> List[Row]:
  out = pathlib.Path(args.out)
  agent = dict(args.agent)
  if args.benchmark == 'actor':
    return bench_actor(
      out,
      args.task,
      args.preset,
      agent,
      args.seconds,
      args.repeats,
      args.max_episode_steps,
      envs_per_actor=args.envs_per_actor,
      pixels=_pixel_settings(args),
      replay_process=args.replay_process,
    )
  if args.benchmark == 'replay':
    return bench_replay(
      out,
      args.task,
      args.preset,
      agent,
      args.seconds,
      args.repeats,
      args.fill,
      args.settle,
      args.max_episode_steps,
    )
  if args.benchmark == 'learner':
    return bench_learner(
      out,
      args.task,
      args.presets,
      agent,
      args.seconds,
      args.repeats,
      args.fill,
      args.settle,
      args.max_episode_steps,
    )
  if args.benchmark == 'scaling':
    return bench_scaling(
      out, args.task, args.preset, agent, args.scaling_actors, args.scaling_seconds, args.keep_runs
    )
  return bench_e2e(
    out,
    args.task,
    args.e2e_target,
    args.from_run,
    args.e2e_run_dir,
    args.e2e_max_seconds,
    args.preset,
    agent,
  )


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.benchmark == 'all':
    # One process per benchmark: each gets its node's process environment, set before
    # JAX starts (thread settings cannot change later in a process).
    rest = list(argv)
    rest.remove('all')
    names = [b for b in BENCHMARKS if b != 'e2e' or args.from_run]
    codes = [
      subprocess.call([sys.executable, '-m', 'experiments.throughput_benchmark', name] + rest)
      for name in names
    ]
    return max(codes)
  if args.benchmark in NODE_GROUP:
    from launch.nodes.process import process_env

    os.environ.update(process_env(NODE_GROUP[args.benchmark]))
  try:
    run_one(args)
  except (FileNotFoundError, ValueError) as e:
    if args.benchmark != 'e2e':
      raise
    print(f'error: {e}', file=sys.stderr)  # A --from_run without a usable evaluator log.
    return 2
  name = args.benchmark
  if args.benchmark == 'actor':
    name = actor_figure_name(args.pixels, args.replay_process)
  print(f'[throughput] wrote {args.out}/{name}.csv and .png', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
