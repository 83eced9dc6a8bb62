"""One node of the program as a Slurm job step.

  python -m launch.slurm.node --run_dir R --job JOB --group learner [--index 0]

Builds the same program as `local_mp` from the run's stored config, binds the
servers' addresses through the job's address book, and runs the chosen node
until the program stops: on SIGTERM (scancel, the supervisor) or when the
job's STOP file appears (the evaluator spent the budget, or another step failed).
"""

import argparse
import json
import os
import pathlib
import signal
import sys
import threading
import time

STOP_POLL_SECONDS = 1.0


def _watch_stop_file(path: pathlib.Path) -> None:
  """Turns the job's STOP file into this process's orderly stop (Launchpad's SIGTERM path)."""
  while not path.exists():
    time.sleep(STOP_POLL_SECONDS)
  os.kill(os.getpid(), signal.SIGTERM)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--run_dir', required=True)
  p.add_argument('--job', required=True)
  p.add_argument('--group', required=True)
  p.add_argument('--index', type=int, default=0)
  args = p.parse_args(argv)
  run_dir = pathlib.Path(args.run_dir)
  host = os.environ.get('SLURMD_NODENAME', '?')
  if not (run_dir / 'config.json').exists():
    print(
      f'error: the run directory {run_dir} is not visible on Slurm node {host} (no '
      'config.json): put --run_dir on a file system every node shares',
      file=sys.stderr,
    )
    return 2

  from absl import flags
  from launchpad import context as lp_context
  from launchpad.launch import worker_manager

  from agents.common.logs import get_logger
  from launch.config import ExperimentConfig
  from launch.local.launcher import TERMINATION_NOTICE_SECS
  from launch.program import make_program
  from launch.slurm.addresses import (
    STOP_FILE,
    AddressBook,
    FixedAddress,
    PublishedAddress,
    free_port,
    job_dir,
    node_host,
  )

  flags.FLAGS(['slurm_node'], known_only=True)
  flags.FLAGS.lp_termination_notice_secs = TERMINATION_NOTICE_SECS
  config = ExperimentConfig.from_dict(json.loads((run_dir / 'config.json').read_text()))
  # Only the gateway's own step listens there; the others never run that node.
  gateway = f'{node_host()}:{config.gateway_port or free_port()}'
  program, addresses = make_program(config, gateway)
  nodes = program.groups.get(args.group, [])
  if not 0 <= args.index < len(nodes):
    print(f'error: the program has no {args.group} node {args.index}', file=sys.stderr)
    return 2
  node = nodes[args.index]

  book = AddressBook(run_dir, args.job)
  own = f'{node_host()}:{free_port()}'
  servers = {id(address): name for name, address in addresses.items()}
  for other in (n for group in program.groups.values() for n in group):
    for address in other.addresses:
      if other is node:  # Every node of ours serves its RPCs on this host.
        address.bind(FixedAddress(own))
      elif id(address) in servers:
        address.bind(PublishedAddress(book, servers[id(address)], config.slurm.address_timeout_s))
      else:  # Nodes nobody calls (actors, evaluator) elsewhere in the job.
        address.bind(FixedAddress('unused:0'))
  stop_path = job_dir(run_dir, args.job) / STOP_FILE

  def stop_program() -> None:
    """What `lp.stop()` does here: every step of the job stops (the supervisor sees it too)."""
    stop_path.parent.mkdir(parents=True, exist_ok=True)
    stop_path.touch()

  node._launch_context.initialize(  # pylint: disable=protected-access
    lp_context.LaunchType.LOCAL_MULTI_PROCESSING, None, program_stopper=stop_program
  )
  lp_context.set_context(node._launch_context)  # pylint: disable=protected-access
  # Launchpad's stop event and its SIGTERM/SIGINT handling, as in its own node processes.
  worker_manager.WorkerManager(register_in_thread=True)
  threading.Thread(target=_watch_stop_file, args=(stop_path,), daemon=True).start()
  get_logger('slurm').info(
    '%s_%d is step %s of job %s on node %s',
    args.group,
    args.index,
    os.environ.get('SLURM_STEP_ID', '?'),
    os.environ.get('SLURM_JOB_ID', '?'),
    host,
  )
  if args.group in addresses:
    book.publish(args.group, own)
    get_logger(args.group).info('published %s in %s', own, book.dir)
  elif args.group == 'gateway':
    book.publish('gateway', gateway)
  node.run()
  # Launchpad's stop countdown re-arms SIGALRM every second; the default action
  # would end this (finished, saved) process with 'Alarm clock'.
  signal.signal(signal.SIGALRM, signal.SIG_IGN)
  signal.alarm(0)
  return 0


if __name__ == '__main__':
  sys.exit(main())
