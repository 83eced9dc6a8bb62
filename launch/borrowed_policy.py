"""Another run's policy, for an agent that acts with it (the planner's proposals).

The run is outside this one, so nothing of it is trusted: its config.json is read as JSON
and checked as any ExperimentConfig, its newest checkpoint is read without pickles
(launch.checkpointing), and the policy's spec and every parameter array are checked
against what they will act on. Each refusal is a ConfigError naming the setting and field.
"""

import os
from typing import Any

import numpy as np
from acme import specs

from agents.common.errors import ConfigError, UserError
from launch.checkpointing import load_init_checkpoint
from launch.config import ExperimentConfig
from launch.run_dir import RunDir


def _policy_config(run_dir: str, setting: str) -> ExperimentConfig:
  rd = RunDir(os.path.abspath(run_dir))
  if not rd.exists():
    raise ConfigError(f'{setting}={run_dir!r}: not a run directory (no config.json)')
  try:
    config = ExperimentConfig.from_dict(rd.read_config())
  except UserError as err:
    raise ConfigError(f'{setting}={run_dir!r}: its config.json: {err}') from None
  if config.pixels:
    raise ConfigError(f'{setting}={run_dir!r}: a pixel run; its policy does not read state')
  return config


def _check_spec(theirs: specs.EnvironmentSpec, ours: specs.EnvironmentSpec, where: str) -> None:
  pairs = (
    ('observations.shape', theirs.observations.shape, ours.observations.shape),
    ('actions.shape', theirs.actions.shape, ours.actions.shape),
    ('actions.minimum', np.asarray(theirs.actions.minimum), np.asarray(ours.actions.minimum)),
    ('actions.maximum', np.asarray(theirs.actions.maximum), np.asarray(ours.actions.maximum)),
  )
  for field, a, b in pairs:
    if np.shape(a) != np.shape(b) or not np.array_equal(a, b):
      raise ConfigError(f'{where}: its policy acts on another spec: {field} {a} there, {b} here')


def _check_params(params: Any, expected: Any, where: str, kind: str) -> None:
  """`params` (from the file) has `expected`'s structure, shapes and dtypes, all finite."""
  import jax

  got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  name = jax.tree_util.keystr
  missing, extra = sorted(set(want) - set(got), key=name), sorted(set(got) - set(want), key=name)
  if missing:
    raise ConfigError(f'{where}: {kind} parameter {name(missing[0])} is missing')
  if extra:
    raise ConfigError(f"{where}: {kind} parameter {name(extra[0])} is not the network's")
  for path, value in want.items():
    array = got[path]
    if not isinstance(array, np.ndarray) or array.shape != value.shape:
      raise ConfigError(
        f'{where}: {kind} parameter {name(path)} has shape {np.shape(array)}, the network '
        f'{value.shape}'
      )
    if array.dtype != value.dtype:
      raise ConfigError(
        f'{where}: {kind} parameter {name(path)} is {array.dtype}, the network {value.dtype}'
      )
    if not np.all(np.isfinite(array)):
      raise ConfigError(f'{where}: {kind} parameter {name(path)} holds NaN or infinity')


def check_policy_run(run_dir: str, setting: str) -> None:
  """What the launcher checks of a policy run before launch, without JAX: its config, and
  a checkpoint holding policy parameters (read without pickles). The spec and every array
  are checked where the policy is loaded (load_policy)."""
  _policy_config(run_dir, setting)
  _checkpoint_state(run_dir, setting)


def _checkpoint_state(run_dir: str, setting: str) -> Any:
  """The learner state of the run's newest checkpoint (no pickles), with policy parameters."""
  payload = load_init_checkpoint(run_dir, setting)
  state = payload.get('learner_state') if isinstance(payload, dict) else None
  if getattr(state, 'policy_params', None) is None:
    raise ConfigError(f'{setting}={run_dir!r}: its checkpoint holds no learner_state.policy_params')
  return state


def load_policy(run_dir: str, spec: specs.EnvironmentSpec, setting: str):
  """The Gaussian policy of `run_dir`'s newest checkpoint, as an
  agents.planning.proposals.ProposalPolicy for actions of `spec`, with its critic's state
  value when the run's agent has one (mpo; bc has none).

  `setting` names where the path came from (e.g. 'agent.planner.proposals_from'), for the
  errors. The run's agent must have a Gaussian policy head (the MPO family: mpo, bc).
  """
  import jax

  from agents.planning.proposals import ProposalPolicy
  from launch import experiment

  where = f'{setting}={run_dir!r}'
  config = _policy_config(run_dir, setting)
  builder = experiment.make_builder(config)
  _check_spec(builder.spec, spec, where)
  networks = builder.make_networks()
  if not hasattr(networks, 'policy'):
    raise ConfigError(
      f'{where}: a {config.algorithm!r} run; proposals need a Gaussian policy (mpo or bc)'
    )
  state = _checkpoint_state(run_dir, setting)
  policy_params = state.policy_params
  key = jax.random.PRNGKey(0)
  obs = np.zeros((1,) + tuple(spec.observations.shape), np.float32)
  _check_params(policy_params, networks.policy.init(key, obs), where, 'policy')
  params = {'policy': policy_params}
  value = None
  critic_params = getattr(state, 'critic_params', None)
  if critic_params is not None and hasattr(builder, 'state_value'):
    action = np.zeros((1,) + tuple(spec.actions.shape), np.float32)
    _check_params(critic_params, networks.critic.init(key, obs, action), where, 'critic')
    params['critic'] = critic_params
    state_value = builder.state_value(networks)

    def value(p, obs):
      return state_value(p['policy'], p['critic'], obs)

  def apply(p, obs):
    return networks.policy.apply(p['policy'], obs)

  return ProposalPolicy(apply, params, value)


def lend_policy(builder: Any) -> None:
  """Lends `builder` the loader of its policy_run()'s policy, when it names one
  (agents.builder: the optional `policy_run` and `lend_policy`)."""
  named = builder.policy_run() if hasattr(builder, 'policy_run') else None
  if named is not None:
    setting, run = named
    builder.lend_policy(lambda: load_policy(run, builder.spec, setting))
