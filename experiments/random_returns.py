"""Mean return of uniform random actions per task: the 0 of expert-normalised scores.

    python -m experiments.random_returns --tasks cartpole:swingup,walker:walk --episodes 10

prints one JSON object, task -> {mean_return, std_return, episodes, how}, for
environments/expert_references.json.
"""

import argparse
import json
import sys

import numpy as np


def random_returns(task: str, episodes: int, seed: int) -> list:
  """Returns of `episodes` episodes of uniform random actions in the action bounds."""
  from environments.suite import make_environment

  env = make_environment(task, seed=seed)
  spec = env.action_spec()
  rng = np.random.default_rng(seed)
  returns = []
  for _ in range(episodes):
    timestep, total = env.reset(), 0.0
    while not timestep.last():
      action = rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype)
      timestep = env.step(action)
      total += float(timestep.reward or 0.0)
    returns.append(total)
  return returns


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--tasks', required=True, help='comma-separated domain:task names')
  parser.add_argument('--episodes', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  out = {}
  for task in args.tasks.split(','):
    returns = random_returns(task, args.episodes, args.seed)
    out[task] = {
      'mean_return': round(float(np.mean(returns)), 2),
      'std_return': round(float(np.std(returns)), 2),
      'episodes': args.episodes,
      'how': f'python -m experiments.random_returns --tasks {task} --episodes {args.episodes} '
      f'--seed {args.seed} (uniform random actions in the action bounds, environment seed '
      f'{args.seed})',
    }
    print(f'{task}: {out[task]["mean_return"]}', file=sys.stderr)
  print(json.dumps(out, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
