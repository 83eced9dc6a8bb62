"""Soft Actor-Critic from sbx-rl on one dm_control task, for experiments.peer_benchmark.

Runs in the benchmark's own virtual environment (a newer Python with sbx-rl, gymnasium
and the project's dm_control and MuJoCo pins), never in the project's: it imports only
the standard library, numpy, dm_control, gymnasium and sbx. The peer benchmark starts it
as

  <venv>/bin/python experiments/peer_sac.py --task cartpole:swingup --seconds 900 \\
      --out <dir> --t0 <unix time the benchmark started this run>

SAC's settings are sbx's defaults (one update of batch 256 per environment step, two
256-unit layers, learning rate 3e-4, automatic entropy), as a user would run it. The
observation is the task's observation dict flattened in sorted key order, float32: the
vector the project's own actors see (acme's ConcatObservationWrapper).

Every `--eval_every` seconds of training, 5 deterministic episodes on a separate
environment; the clock stops while they run, so evaluations cost SAC no training time.
Writes <out>/evaluations.csv (elapsed_s, env_steps, updates, mean_return, min_return,
max_return) as it goes, and <out>/done when the budget is spent.
"""

import argparse
import csv
import pathlib
import sys
import time
from typing import Dict, List

import numpy as np

FIELDS = ('elapsed_s', 'env_steps', 'updates', 'mean_return', 'min_return', 'max_return')


def flatten_observation(observation: Dict[str, np.ndarray]) -> np.ndarray:
  """The observation dict as one float32 vector, arrays flattened in sorted key order."""
  return np.concatenate(
    [np.asarray(observation[k], dtype=np.float32).reshape(-1) for k in sorted(observation)]
  )


def make_env(task: str, seed: int):
  """A gymnasium view of the dm_control task (float32 observations, its own action bounds)."""
  import gymnasium as gym
  from dm_control import suite

  domain, name = task.split(':')

  class DmControlEnv(gym.Env):
    """dm_control's time limit is a truncation; a zero discount is a termination."""

    def __init__(self):
      self._env = suite.load(domain, name, task_kwargs={'random': seed})
      spec = self._env.action_spec()
      self.action_space = gym.spaces.Box(
        spec.minimum.astype(np.float32), spec.maximum.astype(np.float32), dtype=np.float32
      )
      size = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
      self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
      super().reset(seed=seed)
      return flatten_observation(self._env.reset().observation), {}

    def step(self, action):
      ts = self._env.step(action)
      terminated = ts.last() and ts.discount == 0.0
      truncated = ts.last() and not terminated
      return flatten_observation(ts.observation), float(ts.reward or 0.0), terminated, truncated, {}

  return DmControlEnv()


def evaluate(model, env, episodes: int) -> List[float]:
  returns = []
  for _ in range(episodes):
    obs, _ = env.reset()
    total, done = 0.0, False
    while not done:
      action, _ = model.predict(obs, deterministic=True)
      obs, reward, terminated, truncated, _ = env.step(action)
      total += reward
      done = terminated or truncated
    returns.append(total)
  return returns


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--task', required=True)
  p.add_argument('--seconds', type=float, required=True, help='training wall-clock budget')
  p.add_argument('--out', required=True)
  p.add_argument('--t0', type=float, default=None, help='unix time the run started')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--eval_every', type=float, default=60.0)
  p.add_argument('--eval_episodes', type=int, default=5)
  args = p.parse_args(argv)
  t0 = time.time() if args.t0 is None else args.t0
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)

  from sbx import SAC
  from stable_baselines3.common.callbacks import BaseCallback

  env, eval_env = make_env(args.task, args.seed), make_env(args.task, args.seed + 1000)
  model = SAC('MlpPolicy', env, seed=args.seed, verbose=0)
  log_path = out / 'evaluations.csv'

  class Clock(BaseCallback):
    """Evaluates on schedule with the clock stopped; ends training when the budget is spent."""

    def __init__(self):
      super().__init__()
      self.paused = 0.0  # seconds spent evaluating
      self.last_step = -1  # env steps at the last evaluation
      self.next_eval = args.eval_every
      self.file = open(log_path, 'w', newline='')
      self.writer = csv.DictWriter(self.file, fieldnames=FIELDS)
      self.writer.writeheader()

    def elapsed(self) -> float:
      return time.time() - t0 - self.paused

    def evaluate(self) -> None:
      elapsed, start = self.elapsed(), time.time()
      returns = evaluate(self.model, eval_env, args.eval_episodes)
      self.paused += time.time() - start
      self.last_step = self.num_timesteps
      row = {
        'elapsed_s': round(elapsed, 3),
        'env_steps': self.num_timesteps,
        'updates': int(getattr(self.model, '_n_updates', 0)),
        'mean_return': float(np.mean(returns)),
        'min_return': float(np.min(returns)),
        'max_return': float(np.max(returns)),
      }
      self.writer.writerow(row)
      self.file.flush()
      print(
        f'[sac {args.task}] {elapsed:7.0f} s  {row["env_steps"]:8d} env steps  '
        f'{row["updates"]:8d} updates  return {row["mean_return"]:7.1f}',
        flush=True,
      )

    def _on_step(self) -> bool:
      elapsed = self.elapsed()
      if elapsed >= self.next_eval:
        self.evaluate()
        self.next_eval = (elapsed // args.eval_every + 1) * args.eval_every
      return self.elapsed() < args.seconds

  clock = Clock()
  model.learn(total_timesteps=10**9, callback=clock)
  if clock.last_step != model.num_timesteps:
    clock.evaluate()  # the final policy
  clock.file.close()
  (out / 'done').write_text(f'{clock.elapsed():.1f}\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
