"""Builds an offline dataset (an episode store with a manifest) from a stored run.

  python -m experiments.make_dataset --run_dir runs/cartpole_swingup --kind expert \
      --episodes 20 --out datasets/cartpole_expert
  python -m experiments.make_dataset --run_dir runs/cartpole_swingup --kind mixed \
      --episodes 20 --poor_fraction 0.5 --out datasets/cartpole_mixed
  python -m experiments.make_dataset --run_dir runs/cartpole_swingup --kind random \
      --episodes 20 --out datasets/cartpole_random

Kinds:
  expert  episodes of the run's newest checkpoint (its stochastic policy)
  mixed   --poor_fraction of the episodes poor, the rest expert; poor means the
          run's oldest kept checkpoint with action noise --noise (--poor_policy
          noisy, the default) or uniformly random actions (--poor_policy random)
  random  uniformly random actions
Episodes are generated with the project's own actors on the run's task. The
output is an episode store (train on it with --datasets OUT) and OUT/manifest.json
saying where every episode came from and its return.
"""

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

KINDS = ('expert', 'mixed', 'random')


class _FixedParams:
  """A VariableSource serving one set of policy parameters."""

  def __init__(self, params: Any):
    self._params = params

  def get_variables(self, names: Sequence[str]) -> List[Any]:
    return [self._params for _ in names]


class _NoisyActor:
  """Wraps an actor: adds Gaussian noise to its actions, clipped to the action bounds."""

  def __init__(self, actor, noise: float, spec, seed: int):
    import numpy as np

    self._actor, self._noise, self._spec = actor, noise, spec
    self._rng = np.random.default_rng(seed)

  def select_action(self, observation):
    import numpy as np

    action = self._actor.select_action(observation)
    noisy = action + self._noise * self._rng.standard_normal(action.shape)
    return np.clip(noisy, self._spec.minimum, self._spec.maximum).astype(action.dtype)

  def observe_first(self, timestep):
    pass

  def observe(self, action, next_timestep):
    pass

  def update(self, wait: bool = False):
    pass


class _RandomActor(_NoisyActor):
  """Uniformly random actions within the bounds."""

  def __init__(self, spec, seed: int):
    super().__init__(None, 0.0, spec, seed)

  def select_action(self, observation):
    del observation
    return self._rng.uniform(self._spec.minimum, self._spec.maximum).astype(self._spec.dtype)


def build_dataset(
  run_dir: str,
  kind: str,
  episodes: int,
  out: str,
  poor_fraction: float = 0.5,
  noise: float = 0.3,
  seed: int = 0,
  poor_policy: str = 'noisy',
) -> Dict[str, Any]:
  """Generates the episodes into a new store at `out`; returns the manifest."""
  import acme
  from acme.utils import loggers

  from agents.common.errors import ConfigError
  from environments.actions import ExecutedActionActor
  from launch import experiment
  from launch.checkpointing import Checkpointer
  from launch.config import ExperimentConfig
  from launch.run_dir import RunDir
  from launch.store.episodes import EpisodeStore
  from launch.store.recorder import EpisodeRecorder

  if kind not in KINDS:
    raise ConfigError(f'kind={kind!r} is invalid: must be one of {", ".join(KINDS)}')
  if episodes < 1:
    raise ConfigError(f'episodes={episodes} is invalid: must be >= 1')
  if poor_policy not in ('noisy', 'random'):
    raise ConfigError(f"poor_policy={poor_policy!r} is invalid: must be 'noisy' or 'random'")
  if not 0.0 <= poor_fraction <= 1.0:
    raise ConfigError(f'poor_fraction={poor_fraction} is invalid: must be in [0, 1]')
  rd = RunDir(os.path.abspath(run_dir))
  if not rd.exists():
    raise ConfigError(f'{run_dir} is not a run directory (no config.json)')
  out_path = pathlib.Path(out).resolve()
  if out_path.exists() and any(out_path.iterdir()):
    raise ConfigError(f'{out} exists and is not empty; choose a new --out')
  cfg = ExperimentConfig.from_dict(rd.read_config())
  builder = experiment.make_builder(cfg)
  env = experiment.make_env(cfg, seed=seed + 777)
  # Another run's files cross the trust boundary: no pickles (convert trusted ones first).
  ckpt = Checkpointer(rd.checkpoints, read_pickles=False)
  steps = ckpt.all_steps()
  if kind != 'random' and not steps:
    raise ConfigError(f'{run_dir} has no checkpoint to generate {kind} episodes from')

  def policy_actor(step: int, noise_scale: float, actor_seed: int):
    state = ckpt.restore(step)['learner_state']
    actor = builder.make_actor(_FixedParams(state.policy_params), adder=None, seed=actor_seed)
    return (
      _NoisyActor(actor, noise_scale, builder.spec.actions, actor_seed) if noise_scale else actor
    )

  num_poor = int(round(poor_fraction * episodes)) if kind == 'mixed' else 0
  plan = []  # (source description, actor factory)
  for i in range(episodes):
    if kind == 'random' or (i < num_poor and poor_policy == 'random'):
      plan.append(({'policy': 'random'}, lambda i=i: _RandomActor(builder.spec.actions, seed + i)))
    elif i < num_poor:
      plan.append(
        (
          {'policy': 'early_checkpoint_noisy', 'checkpoint_step': steps[0], 'noise': noise},
          lambda i=i: policy_actor(steps[0], noise, seed + i),
        )
      )
    else:
      plan.append(
        (
          {'policy': 'final_checkpoint', 'checkpoint_step': steps[-1]},
          lambda i=i: policy_actor(steps[-1], 0.0, seed + i),
        )
      )

  store = EpisodeStore(out_path)
  writer = store.writer('make_dataset')
  entries = []
  start = time.time()
  for i, (source, make_actor) in enumerate(plan):
    recorder = EpisodeRecorder(
      writer,
      metadata={'source': f'{kind}_dataset', 'task': cfg.task, 'from_run': str(rd.path), **source},
    )
    # The store holds the executed (clipped) action, as for every source.
    actor = ExecutedActionActor(make_actor(), builder.spec.actions)
    loop = acme.EnvironmentLoop(
      env, actor, should_update=False, observers=[recorder], logger=loggers.NoOpLogger()
    )
    result = loop.run_episode()
    entries.append(
      {
        **source,
        'episode_return': float(result['episode_return']),
        'length': int(result['episode_length']),
      }
    )
    print(
      f'[dataset] episode {i + 1}/{episodes} ({source["policy"]}): '
      f'return {result["episode_return"]:.1f} ({time.time() - start:.0f}s)',
      flush=True,
    )
  writer.close()
  returns = [e['episode_return'] for e in entries]
  manifest = {
    'kind': kind,
    'task': cfg.task,
    'from_run': str(rd.path),
    'episodes': entries,
    'num_episodes': len(entries),
    'mean_return': sum(returns) / len(returns),
    'poor_fraction': poor_fraction if kind == 'mixed' else None,
    'noise': noise if kind == 'mixed' else None,
    'poor_policy': poor_policy if kind == 'mixed' else None,
    'created': time.time(),
  }
  (out_path / 'manifest.json').write_text(json.dumps(manifest, indent=1))
  return manifest


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--run_dir', required=True, help='the run whose task and checkpoints to use')
  p.add_argument('--kind', required=True, choices=KINDS)
  p.add_argument('--episodes', type=int, default=20)
  p.add_argument('--out', required=True, help='a new directory for the dataset')
  p.add_argument('--poor_fraction', type=float, default=0.5, help='mixed: share of poor episodes')
  p.add_argument('--noise', type=float, default=0.3, help='mixed: action noise of poor episodes')
  p.add_argument(
    '--poor_policy',
    choices=['noisy', 'random'],
    default='noisy',
    help='mixed: what acts in the poor episodes',
  )
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  from agents.common.errors import UserError

  try:
    manifest = build_dataset(
      args.run_dir,
      args.kind,
      args.episodes,
      args.out,
      args.poor_fraction,
      args.noise,
      args.seed,
      args.poor_policy,
    )
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(
    f'[dataset] {manifest["num_episodes"]} {args.kind} episodes, mean return '
    f'{manifest["mean_return"]:.1f}, in {args.out} (manifest.json)',
    flush=True,
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
