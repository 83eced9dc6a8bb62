"""Collect-and-infer on a dm_control task: the main job behind `make run`.

  python -m experiments.collect_infer --task cartpole:swingup --num_actors 2 \
      --max_actor_steps 200000 --run_dir runs/cartpole_swingup

Relaunching with an existing --run_dir resumes it (learner state, counters, replay).

Training modes (--mode), all on the same program:
  online             actors and learner together (default)
  offline            no actors; the learner trains on stored episodes (--datasets
                     and/or the run's own store) for --max_learner_steps
  offline_to_online  start from stored data (and --init_checkpoint), add actors;
                     --store_ratio of each batch keeps coming from the store
  iterated           collect --collect_episodes, infer --infer_steps on all stored
                     data, evaluate; --iterations times

On a Slurm cluster (from a login node; --run_dir on a shared file system):
  python -m experiments.collect_infer --launch_type slurm --bind all --run_dir /shared/runs/x \
      --slurm partition=gpu --slurm learner.gpus=1 --slurm time_limit=12:00:00 [--dry_run]
"""

import argparse
import os
import sys
import textwrap

from agents.common.quiet import quiet_third_party  # pylint: disable=g-import-not-at-top

quiet_third_party()  # Before anything imports gym, dm_control or TensorFlow.

from agents import registry  # pylint: disable=g-import-not-at-top # noqa: E402
from launch.cli import agent_setting  # noqa: E402

# Set when this process restarted itself with the loopback bind shim (local_mt).
RESTARTED_ENV = 'COLLECT_INFER_LOOPBACK_RESTARTED'


def parse_args(argv):
  from launch.cli import add_config_flags
  from launch.config import ExperimentConfig

  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  add_config_flags(p, ExperimentConfig)
  p.add_argument(
    '--slurm',
    action='append',
    default=[],
    type=agent_setting,
    metavar='KEY=VALUE',
    help='Slurm setting: partition, time_limit, account, sbatch_args, stop_grace_s, '
    'address_timeout_s, or GROUP.cpus / GROUP.mem_gb / GROUP.gpus',
  )
  p.add_argument(
    '--dry_run',
    action='store_true',
    help='slurm: print the batch script and step commands, submit nothing',
  )
  p.add_argument(
    '--follow',
    action='store_true',
    help='slurm: echo the job log until the job ends; exit with its status',
  )
  p.add_argument(
    '--preset',
    default=None,
    choices=sorted({n for a in registry.names() for n in registry.get(a).presets}),
    help="the algorithm's settings for a new run (its presets sit beside it, e.g. "
    'agents/mpo/presets.py; default: its default preset, cpu)',
  )
  p.add_argument(
    '--agent',
    action='append',
    default=[],
    type=agent_setting,
    metavar='FIELD=VALUE',
    help='agent config override, dotted for sub-configs, '
    'e.g. --agent replay.batch_size=128 --agent pmpo.alpha=0.5 (fields and defaults below)',
  )
  p.epilog = agent_settings_text()
  return p.parse_args(argv)


def agent_settings_text() -> str:
  """Every registered agent's settings with their defaults, read from its config class."""
  lines = ['agent settings (--agent FIELD=VALUE; defaults before --preset):']
  for name in registry.names():
    config = registry.get(name).config_class()
    flat = type(config).flatten(config.to_dict())
    text = f'  {name}: ' + ', '.join(f'{k}={v}' for k, v in flat.items())
    lines.append(textwrap.fill(text, width=100, subsequent_indent='    ', break_on_hyphens=False))
  return '\n'.join(lines)


def _restart_with_loopback_shim(config) -> None:
  """local_mt with bind=loopback: restarts this process with the loopback bind shim preloaded.

  Its servers run in this process, and LD_PRELOAD acts only when a process starts
  (launch.loopback). Same pid, arguments and environment, plus LD_PRELOAD.
  """
  from launch import loopback

  if config.launch_type != 'local_mt' or config.bind != 'loopback' or loopback.active():
    return
  if os.environ.pop(RESTARTED_ENV, None):
    return  # Restarted once already and still without it: launch() says so.
  env = {**os.environ, **loopback.preload_env(), RESTARTED_ENV: '1'}
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from agents.common.config import merge_overrides
  from agents.common.errors import ProgramError, UserError
  from launch.cli import given_values
  from launch.config import ExperimentConfig
  from launch.local import launcher

  given = given_values(args, ExperimentConfig)
  for key in ('datasets', 'init_checkpoint'):  # Node processes may not share this directory.
    if key in given:
      given[key] = (
        [os.path.abspath(d) for d in given[key]]
        if key == 'datasets'
        else os.path.abspath(given[key])
      )
  if given.get('tasks') and 'task' not in given:  # The first of several is the run's own.
    from launch.tasks import parse_tasks

    try:
      given['task'] = parse_tasks(given['tasks'])[0][0]
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
  task = given.setdefault('task', ExperimentConfig.task)
  given.setdefault('run_dir', os.path.join('runs', str(task).replace(':', '_')))
  overrides = {k: v for k, v in given.items() if k in ExperimentConfig.resumable_fields()}
  ignored = sorted(set(given) - set(overrides) - {'run_dir'})
  if args.slurm:
    overrides['slurm_settings'] = list(args.slurm)
  try:
    if args.slurm:  # A bad setting fails before a run directory is created.
      from launch.slurm.config import SlurmConfig

      SlurmConfig().with_overrides(args.slurm)
    values = dict(given)
    agent = registry.get(values.get('algorithm', ExperimentConfig.algorithm))
    values['agent'] = merge_overrides(
      agent.config_class,
      agent.preset(args.preset or agent.default_preset),
      *({k: v} for k, v in args.agent),
    )
    config = ExperimentConfig.from_dict(values)
    if argv is None and not args.dry_run:
      _restart_with_loopback_shim(launcher.planned_config(config, overrides))
    config = launcher.launch(
      config, overrides, dry_run=args.dry_run, follow=args.follow, fixed_flags=ignored
    )
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except ProgramError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    return 130
  if config.launch_type == 'local_mt':
    # Actor threads may still be parked on a rate-limited insert; everything is
    # saved, so end the process instead of waiting for Launchpad to kill it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # pylint: disable=protected-access
  return 0


if __name__ == '__main__':
  sys.exit(main())
