"""Where an MPO update's time goes: the whole jitted update against its pieces, each jitted.

  python -m experiments.throughput.mpo_update_profile --preset cpu --num_samples 20,10,5

The pieces are timed alone, so they do not add up to the update exactly (XLA fuses and
schedules the whole), but their ratios say what dominates:
  target_q_sampled  the target critic's forward pass on N sampled actions per state (the
                    critic loss and the E-step each run one: twice per update)
  critic_fwd_bwd    the online critic's loss and gradient on the batch's own actions
  policy_fwd_bwd    policy and target-policy forward, the M-step loss and its gradient
                    (weights given, no critic)
  update            the whole update as the learner runs it
"""

import argparse
import os
import time
from typing import Callable, Dict, List

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def _time(fn: Callable, args, seconds: float) -> float:
  """Fastest milliseconds of one call over >= `seconds` (after a compile call): on a
  shared machine the fastest call is the one least slowed by others."""
  import jax
  import numpy as np

  jax.block_until_ready(fn(*args))
  times: List[float] = []
  end = time.perf_counter() + seconds
  while time.perf_counter() < end or len(times) < 5:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return 1e3 * float(np.min(times))


def profile(task: str, preset: str, num_samples: int, seconds: float) -> Dict[str, float]:
  """Milliseconds per call of the update and its pieces at `num_samples` sampled actions."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from acme import types

  from agents.mpo import learning, losses
  from agents.mpo.distributions import gaussian_sample
  from experiments.throughput.in_process import make_builder

  builder = make_builder(task, preset, {'num_samples': num_samples})
  config, networks = builder.config, builder.make_networks()
  b, o, a = config.replay.batch_size, builder.obs_dim, builder.action_dim
  rng = np.random.default_rng(0)
  f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  batch = types.Transition(
    observation=f32(b, o),
    action=jnp.clip(f32(b, a), -1, 1),
    reward=jnp.abs(f32(b)),
    discount=jnp.ones((b,), jnp.float32),
    next_observation=f32(b, o),
  )
  state = learning.initial_state(networks, config, o, jax.random.PRNGKey(0))
  update = jax.jit(learning.make_update_fn(networks, config))
  key = jax.random.PRNGKey(1)
  support = jnp.linspace(config.v_min, config.v_max, config.num_atoms)

  @jax.jit
  def target_q_sampled(state, t, key):
    mean, std = networks.policy.apply(state.target_policy_params, t.next_observation)
    actions = gaussian_sample(key, mean, std, num_samples)
    out = networks.critic.apply(state.target_critic_params, t.next_observation, actions)
    return losses.categorical_mean(out, support) if config.num_atoms > 1 else out

  @jax.jit
  def critic_fwd_bwd(state, t):
    def loss(params):
      out = networks.critic.apply(params, t.observation, t.action)
      return jnp.mean(jnp.square(out))

    return jax.grad(loss)(state.critic_params)

  weights = jnp.full((num_samples, b), 1.0 / num_samples, jnp.float32)

  @jax.jit
  def policy_fwd_bwd(state, t, key):
    t_mean, t_std = networks.policy.apply(state.target_policy_params, t.observation)
    actions = gaussian_sample(key, t_mean, t_std, num_samples)

    def loss(params):
      mean, std = networks.policy.apply(params, t.observation)
      d = state.dual_params
      value, _ = losses.decoupled_mstep_loss(
        mean, std, t_mean, t_std, actions, weights, d.alpha_mean, d.alpha_stddev, 0.1, 1e-4
      )
      return value

    return jax.grad(loss)(state.policy_params)

  return {
    'update': _time(lambda s, t: update(s, t)[1], (state, batch), seconds),
    'target_q_sampled': _time(target_q_sampled, (state, batch, key), seconds),
    'critic_fwd_bwd': _time(critic_fwd_bwd, (state, batch), seconds),
    'policy_fwd_bwd': _time(policy_fwd_bwd, (state, batch, key), seconds),
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--task', default='cartpole:swingup')
  p.add_argument('--preset', default='cpu')
  p.add_argument('--num_samples', default='20', help='comma-separated sampled actions per state')
  p.add_argument('--seconds', type=float, default=3.0, help='timing of each piece')
  args = p.parse_args(argv)
  for n in [int(x) for x in args.num_samples.split(',')]:
    ms = profile(args.task, args.preset, n, args.seconds)
    pieces = ', '.join(
      f'{k} {v:.2f} ms ({v / ms["update"]:.0%})' for k, v in ms.items() if k != 'update'
    )
    print(f'num_samples={n}: update {ms["update"]:.2f} ms; {pieces}', flush=True)


if __name__ == '__main__':
  main()
