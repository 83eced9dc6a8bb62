"""Updates per second of the MPO learner from pixels, and where an update's time goes.

  python -m experiments.pixel_learner_benchmark --size 64 --frame_stack 3 --batch 128

Times, on random uint8 batches already in memory (no replay), the jitted pieces of one
update with the cpu preset's heads and the default encoder: the random shift, the encoder
forward pass, the critic loss with its gradient, the policy loss with its gradient, and the
whole update (both losses, optimisers, target copies), also as it was when every network
call encoded its images (before `networks.encode`). Each is the median of `--steps`
calls after one warm-up (compile) call.
"""

import argparse
import dataclasses
import json
import os
import statistics
import time

import numpy as np


def _time(fn, args, steps):
  import jax

  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--size', type=int, default=64)
  p.add_argument('--frame_stack', type=int, default=3)
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--agent', action='append', default=[], help='FIELD=VALUE, e.g. encoder.blocks=0')
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from acme import types
  from dm_env import specs

  from agents.common.config import merge_overrides
  from agents.mpo import learning
  from agents.mpo.config import MPOConfig
  from agents.mpo.presets import PRESETS
  from networks.encoder import ConvEncoder
  from networks.pixel_mpo import make_pixel_mpo_networks

  overrides = dict(a.split('=', 1) for a in args.agent)
  overrides = {k: json.loads(v) for k, v in overrides.items()}
  config = MPOConfig.from_dict(merge_overrides(MPOConfig, PRESETS['cpu'], overrides))
  e = config.encoder
  networks = make_pixel_mpo_networks(
    1, config.policy_layer_sizes, config.critic_layer_sizes, config.num_atoms,
    channels=e.channels, blocks=e.blocks, feature_dim=e.feature_dim, shift_pad=e.shift_pad,
  )  # fmt: skip
  shape = (args.size, args.size, 3 * args.frame_stack)
  spec = specs.BoundedArray(shape, np.uint8, 0, 255)
  state = jax.jit(lambda k: learning.initial_state(networks, config, spec, k))(
    jax.random.PRNGKey(0)
  )
  rng = np.random.default_rng(0)
  b = args.batch
  obs = rng.integers(0, 256, (b,) + shape, dtype=np.uint8)
  batch = types.Transition(
    observation=obs,
    action=rng.uniform(-1, 1, (b, 1)).astype(np.float32),
    reward=rng.uniform(0, 1, b).astype(np.float32),
    discount=np.full(b, 0.99, np.float32),
    next_observation=np.roll(obs, 1, axis=0),
  )
  batch = jax.device_put(batch)
  key = jax.random.PRNGKey(1)
  update = jax.jit(learning.make_update_fn(networks, config))
  # The learner before networks.encode: every policy and critic call encoded its images.
  per_call_nets = dataclasses.replace(networks, encode=None)
  per_call_update = jax.jit(learning.make_update_fn(per_call_nets, config))
  encoder = jax.jit(
    lambda params, x: networks.critic.apply(params, x, jnp.zeros((b, 1)))
  )  # encoder + critic head forward
  augment = jax.jit(networks.augment)

  def encoder_only(x):
    import haiku as hk

    model = hk.without_apply_rng(
      hk.transform(lambda y: ConvEncoder(e.channels, e.blocks, e.feature_dim)(y))  # noqa: PLW0108
    )
    return model.apply({k: v for k, v in state.critic_params.items() if k.startswith('encoder')}, x)

  def critic_grad(params, t, k):
    def loss(p):
      out = networks.critic.apply(p, t.observation, t.action)
      return jnp.mean(out**2)

    return jax.grad(loss)(params)

  def policy_grad(params, t):
    def loss(p):
      mean, std = networks.policy.apply(p, t.observation)
      return jnp.mean(mean**2 + std)

    return jax.grad(loss)(params)

  rows = [
    ('random shift (obs)', _time(augment, (key, batch.observation), args.steps)),
    ('encoder forward', _time(jax.jit(encoder_only), (batch.observation,), args.steps)),
    ('critic forward', _time(encoder, (state.critic_params, batch.observation), args.steps)),
    (
      'critic grad (1 action)',
      _time(jax.jit(critic_grad), (state.critic_params, batch, key), args.steps),
    ),
    ('policy grad', _time(jax.jit(policy_grad), (state.policy_params, batch), args.steps)),
    ('whole update, encoding per call', _time(per_call_update, (state, batch), args.steps)),
    ('whole update', _time(update, (state, batch), args.steps)),
  ]
  load = os.getloadavg()[0]
  print(
    f'pixel MPO learner, {shape[0]}x{shape[1]}x{shape[2]} uint8, batch {b}, encoder '
    f'channels {e.channels} blocks {e.blocks} features {e.feature_dim}, heads '
    f'{config.policy_layer_sizes}/{config.critic_layer_sizes}, {config.num_samples} samples; '
    f'{jax.devices()[0].platform}, load {load:.1f}'
  )
  for name, seconds in rows:
    print(f'  {name:32s} {seconds * 1e3:8.1f} ms')
  print(f'  updates/s {1.0 / rows[-1][1]:.2f} ({rows[-2][1] / rows[-1][1]:.2f}x encoding per call)')


if __name__ == '__main__':
  main()
