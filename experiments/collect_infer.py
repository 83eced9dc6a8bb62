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
  python -m experiments.collect_infer --launch_type slurm --run_dir /shared/runs/x \
      --slurm partition=gpu --slurm learner.gpus=1 --slurm time_limit=12:00:00 [--dry_run]
"""

import argparse
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from agents import registry  # pylint: disable=g-import-not-at-top


def _agent_override(text: str):
  key, sep, value = text.partition('=')
  if not sep:
    raise argparse.ArgumentTypeError(f'expected FIELD=VALUE, got {text!r}')
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--task', default='cartpole:swingup', help='dm_control domain:task')
  p.add_argument('--run_dir', default=None, help='default: runs/<domain>_<task>')
  p.add_argument('--num_actors', type=int, default=None)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--max_actor_steps', type=int, default=None,
                 help='environment-step budget (default 200000)')
  p.add_argument('--max_seconds', type=float, default=None, help='wall-clock budget')
  p.add_argument('--eval_every_seconds', type=float, default=None)
  p.add_argument('--eval_every_learner_steps', type=int, default=None)
  p.add_argument('--eval_episodes', type=int, default=None)
  p.add_argument('--launch_type', '--launch', default=None, choices=['local_mp', 'local_mt', 'slurm'],
                 help='local_mp (default): one process per node here; slurm: submit a batch job')
  p.add_argument('--slurm', action='append', default=[], type=_agent_override, metavar='KEY=VALUE',
                 help='Slurm setting: partition, time_limit, account, sbatch_args, stop_grace_s, '
                      'address_timeout_s, or GROUP.cpus / GROUP.mem_gb / GROUP.gpus')
  p.add_argument('--dry_run', action='store_true',
                 help='slurm: print the batch script and step commands, submit nothing')
  p.add_argument('--follow', action='store_true',
                 help='slurm: echo the job log until the job ends; exit with its status')
  p.add_argument('--actor_failures', default=None, choices=['restart', 'continue', 'stop'],
                 help='when an actor process dies (default restart, at most --max_actor_restarts)')
  p.add_argument('--max_actor_restarts', type=int, default=None)
  p.add_argument('--external_ratio', type=float, default=None,
                 help='share of each learner batch from attached robots (when they sent data)')
  p.add_argument('--announce_host', default=None,
                 help='host written in addresses.json for attaching processes (default: '
                      '$COLLECT_INFER_HOST, else localhost)')
  p.add_argument('--mode', default=None,
                 choices=['online', 'offline', 'offline_to_online', 'iterated'])
  p.add_argument('--algorithm', default=None, choices=registry.names(),
                 help="new runs: a registered agent (default mpo); 'bc' is behaviour cloning "
                      '(use --agent policy_loss=pac for PAC)')
  p.add_argument('--max_learner_steps', type=int, default=None, help='learner-step budget')
  p.add_argument('--store_ratio', type=float, default=None,
                 help='fraction of each learner batch drawn from stored episodes')
  p.add_argument('--datasets', nargs='+', default=None, metavar='STORE_DIR',
                 help='episode stores (e.g. runs/X/store) to train on as well')
  p.add_argument('--init_checkpoint', default=None,
                 help='a new run starts its learner from this checkpoint file or run directory')
  p.add_argument('--no_store', action='store_true',
                 help='do not keep episodes in <run>/store (new runs only)')
  p.add_argument('--collect_episodes', type=int, default=None, help='iterated: per iteration')
  p.add_argument('--infer_steps', type=int, default=None, help='iterated: per iteration')
  p.add_argument('--iterations', type=int, default=None, help='iterated: how many')
  p.add_argument('--from_scratch', dest='warm_start', action='store_const', const=False,
                 default=None, help='iterated: each iteration starts a fresh learner')
  p.add_argument('--preset', default=None,
                 choices=sorted({n for a in registry.names() for n in registry.get(a).presets}),
                 help="the algorithm's settings for a new run (its presets sit beside it, e.g. "
                      'agents/mpo/presets.py; default: its default preset, cpu)')
  p.add_argument('--agent', action='append', default=[], type=_agent_override,
                 metavar='FIELD=VALUE', help='agent config override, dotted for sub-configs, '
                 'e.g. --agent replay.batch_size=128 --agent pmpo.alpha=0.5')
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from launch.config import ExperimentConfig
  from agents.common.config import merge_overrides
  from agents.common.errors import ProgramError, UserError
  from launch.local import launcher

  overrides = {k: getattr(args, k) for k in launcher.RESUME_OVERRIDABLE
               if getattr(args, k, None) is not None}
  if args.slurm:
    overrides['slurm_settings'] = list(args.slurm)
  if 'datasets' in overrides:  # Node processes may not share this working directory.
    overrides['datasets'] = [os.path.abspath(d) for d in overrides['datasets']]
  run_dir = args.run_dir or os.path.join('runs', args.task.replace(':', '_'))
  try:
    if args.slurm:  # A bad setting fails before a run directory is created.
      from launch.slurm.config import SlurmConfig
      SlurmConfig().with_overrides(args.slurm)
    values = {'run_dir': run_dir, 'task': args.task, 'seed': args.seed,
              **{k: v for k, v in overrides.items() if k != 'slurm_settings'}}
    if args.init_checkpoint:
      values['init_checkpoint'] = os.path.abspath(args.init_checkpoint)
    if args.algorithm:
      values['algorithm'] = args.algorithm
    if args.no_store:
      values['store_episodes'] = False
    agent = registry.get(args.algorithm or ExperimentConfig.algorithm)
    values['agent'] = merge_overrides(agent.config_class,
                                      agent.preset(args.preset or agent.default_preset),
                                      *({k: v} for k, v in args.agent))
    config = ExperimentConfig.from_dict(values)
    config = launcher.launch(config, overrides, dry_run=args.dry_run, follow=args.follow)
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
