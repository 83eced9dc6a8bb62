"""The batch script of a Slurm launch and the command of each job step."""

import math
import pathlib
import shlex
from typing import List, Tuple

from launch.config import ExperimentConfig
from launch.slurm.config import SlurmConfig

JOB_ID = '$SLURM_JOB_ID'


def program_nodes(config: ExperimentConfig) -> List[Tuple[str, int]]:
  """(group, index) of every node, in start order: servers first."""
  nodes = [('replay', 0), ('counter', 0), ('learner', 0), ('gateway', 0)]
  if config.mode != 'offline':  # As in launch.program: offline has no actors.
    nodes += [('actor', i) for i in range(config.num_actors)]
  return nodes + [('evaluator', 0)]


def _mem_per_cpu_mb(slurm: SlurmConfig, group: str) -> int:
  r = slurm.resources[group]
  return int(math.ceil(slurm.memory_mb(group) / r['cpus']))


def allocation(config: ExperimentConfig) -> List[str]:
  """sbatch options for one allocation that holds every step's request at once."""
  slurm = config.slurm
  nodes = program_nodes(config)
  cpus = sum(slurm.resources[g]['cpus'] for g, _ in nodes)
  gpus = sum(slurm.resources[g]['gpus'] for g, _ in nodes)
  # Slurm spreads the allocation's CPUs, and with them its memory, over nodes as it
  # likes: with the largest per-CPU share every step fits wherever its CPUs are.
  per_cpu = max(_mem_per_cpu_mb(slurm, g) for g, _ in nodes)
  opts = [f'--ntasks={cpus}', '--cpus-per-task=1', f'--mem-per-cpu={per_cpu}M']
  if gpus:
    opts.append(f'--gpus={gpus}')
  if slurm.partition:
    opts.append(f'--partition={slurm.partition}')
  if slurm.time_limit:
    opts.append(f'--time={slurm.time_limit}')
  if slurm.account:
    opts.append(f'--account={slurm.account}')
  return opts + list(slurm.sbatch_args)


def step_command(
  config: ExperimentConfig, job: str, group: str, index: int, python: str, env: dict
) -> List[str]:
  """`srun` for one node: its group's CPUs, memory and GPUs, in the job's allocation."""
  slurm = config.slurm
  r = slurm.resources[group]
  cmd = [
    'srun',
    '--exact',
    '--nodes=1',
    '--ntasks=1',
    f'--cpus-per-task={r["cpus"]}',
    f'--mem-per-cpu={_mem_per_cpu_mb(slurm, group)}M',
    f'--job-name={group}_{index}',
  ]
  if r['gpus']:
    cmd.append(f'--gpus={r["gpus"]}')
  cmd += ['env', *[f'{k}={v}' for k, v in sorted(env.items())]]
  cmd += [
    python,
    '-m',
    'launch.slurm.node',
    '--run_dir',
    config.run_dir,
    '--job',
    job,
    '--group',
    group,
    '--index',
    str(index),
  ]
  return cmd


def batch_log(run_dir: pathlib.Path, job: str = '%j') -> pathlib.Path:
  return pathlib.Path(run_dir) / 'logs' / 'slurm' / f'job-{job}.log'


def batch_script(config: ExperimentConfig, python: str, workdir: str) -> str:
  """The script sbatch runs: the allocation, then the supervisor in the batch step."""
  name = 'ci-' + pathlib.Path(config.run_dir).name
  lines = [
    '#!/bin/bash',
    f'#SBATCH --job-name={name}',
    f'#SBATCH --output={batch_log(config.run_dir)}',
    f'#SBATCH --chdir={workdir}',
  ]
  lines += [f'#SBATCH {opt}' for opt in allocation(config)]
  lines += [
    '',
    '# Starts one job step per node of the program, follows them, stops them.',
    f'exec {shlex.quote(python)} -m launch.slurm.supervise --run_dir '
    f'{shlex.quote(config.run_dir)} --job "$SLURM_JOB_ID"',
    '',
  ]
  return '\n'.join(lines)
