"""Keeps a trained run's policies small enough to commit, so its datasets can be made again
in minutes by a later session (run directories do not survive one).

  python -m experiments.keep_policies --run_dir /tmp/experts/cartpole_swingup \\
      --out experiments/results/experts/cartpole_swingup

Writes OUT/config.json (the run's) and, in OUT/checkpoints/, the run's oldest and newest
kept checkpoints with the policy's parameters alone (PolicyOnly: no critic, targets or
optimiser state; a few hundred KB for the cpu preset's MLP). Any agent that acts: an MPO-
family run keeps its policy, a behaviour-cloning run its policy, a generalist run its
transformer (so a DAgger round's executor, make_dataset --executor_run, can be kept too).
OUT is a run directory as experiments.make_dataset reads one: `--run_dir OUT --kind
expert` acts with the newest policy, `--kind mixed` with the oldest (plus action noise) for
the poor share, `--executor_run OUT` with the newest. It is not a run to resume or
initialise a learner from (those need the whole learner state; the learner names the
missing fields).
"""

import argparse
import os
import pathlib
import sys
from typing import Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def keep_policies(run_dir: str, out: str, newest_only: bool = False) -> pathlib.Path:
  """Writes `out` (see the module's text); returns it. `newest_only`: the newest checkpoint
  alone (what an executor acts with). The checkpoints are read without pickles (another
  run's files)."""
  from agents.common.errors import ConfigError
  from agents.variable_client import acting_params
  from launch.checkpointing import Checkpointer, PolicyOnly
  from launch.run_dir import RunDir

  source = RunDir(os.path.abspath(run_dir))
  if not source.exists():
    raise ConfigError(f'{run_dir} is not a run directory (no config.json)')
  reader = Checkpointer(source.checkpoints, read_pickles=False)
  steps = reader.all_steps()
  if not steps:
    raise ConfigError(f'{run_dir} has no checkpoint')
  target = RunDir(os.path.abspath(out))
  target.path.mkdir(parents=True, exist_ok=True)
  config = source.read_config()
  target.write_config({**config, 'run_dir': out})  # As given: a relative path stays one.
  writer = Checkpointer(target.checkpoints, keep=2)
  for step in [max(steps)] if newest_only else sorted({min(steps), max(steps)}):
    state = reader.restore(step)['learner_state']
    try:
      params = acting_params(state)
    except AttributeError:
      raise ConfigError(
        f'{run_dir}: its learner state has neither policy_params nor params (no policy to keep)'
      ) from None
    writer.save({'learner_state': PolicyOnly(params, state.steps)}, step)
  return target.path


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    '--run_dir', required=True, help='a trained run (MPO family, BC or the generalist)'
  )
  p.add_argument('--out', required=True)
  p.add_argument(
    '--newest_only',
    action='store_true',
    help='keep the newest checkpoint alone (a DAgger executor acts with nothing else)',
  )
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  out = keep_policies(args.run_dir, args.out, args.newest_only)
  kept = list((out / 'checkpoints').glob('*.ckpt'))
  sizes = sum(f.stat().st_size for f in kept)
  print(
    f'[keep-policies] {out}: config.json and {len(kept)} policy checkpoint(s), '
    f'{sizes / 1024:.0f} KB'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
