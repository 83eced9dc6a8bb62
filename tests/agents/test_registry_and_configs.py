"""The agent registry and the config machinery every agent shares (agents.common.config)."""

import json

import pytest

from agents import registry
from agents.bc.config import BCConfig
from agents.common.config import merge_overrides
from agents.common.errors import ConfigError
from agents.common.replay_config import ReplayConfig
from agents.mpo.config import MPOConfig, PACConfig, PerceiverConfig, PMPOConfig
from launch import experiment
from launch.config import ExperimentConfig

# ---------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------


def test_registry_names_the_agents_of_the_tree():
  assert {'mpo', 'bc'} <= set(registry.names())
  mpo, bc = registry.get('mpo'), registry.get('bc')
  assert mpo.config_class is MPOConfig and bc.config_class is BCConfig
  assert mpo.builder_class().__name__ == 'MPOBuilder'
  assert bc.builder_class().__name__ == 'BCBuilder'


def test_unknown_algorithm_lists_the_registered_names():
  with pytest.raises(ConfigError) as info:
    registry.get('dreamer')
  message = str(info.value)
  assert "unknown algorithm 'dreamer'" in message
  for name in registry.names():
    assert name in message
  with pytest.raises(ConfigError, match='registered: .*bc.*mpo'):
    ExperimentConfig.from_dict({'algorithm': 'dreamer'})


def test_experiment_reads_the_agent_config_of_its_algorithm():
  assert isinstance(ExperimentConfig().agent, MPOConfig)
  bc = ExperimentConfig.from_dict({'algorithm': 'bc', 'agent': {'learning_rate': 1e-3}})
  assert isinstance(bc.agent, BCConfig) and bc.agent.learning_rate == 1e-3
  # An agent config of another algorithm is refused, not silently used.
  with pytest.raises(ConfigError, match="algorithm 'bc' takes a BCConfig"):
    ExperimentConfig(algorithm='bc', agent=MPOConfig())
  # The same algorithm and agent round-trip through config.json.
  again = ExperimentConfig.from_dict(json.loads(json.dumps(bc.to_dict())))
  assert again == bc


def test_make_builder_is_a_registry_lookup():
  for name, builder in (('mpo', 'MPOBuilder'), ('bc', 'BCBuilder')):
    cfg = ExperimentConfig(algorithm=name)
    assert type(experiment.make_builder(cfg)).__name__ == builder


def test_presets_sit_beside_their_agent_and_are_valid_configs():
  for name in registry.names():
    entry = registry.get(name)
    assert entry.default_preset is None or entry.default_preset in entry.presets
    for preset in entry.presets:
      entry.config_class.from_dict(entry.preset(preset))  # every preset is a valid config
  # The MPO presets' values, as collect_infer.py had them.
  cpu = MPOConfig.from_dict(registry.get('mpo').preset('cpu'))
  assert (cpu.policy_layer_sizes, cpu.critic_layer_sizes) == ((256, 256), (256, 256))
  assert cpu.replay.batch_size == 128
  assert cpu.policy_learning_rate == cpu.critic_learning_rate == 3e-4
  # Measured fastest to a good return on 2 cores (experiments/results/peer/).
  assert cpu.num_samples == 10 and cpu.share_target_samples
  # A state run's transition is one packed row (0.35x the learner pipeline's CPU).
  assert cpu.replay.packed_items and not MPOConfig().replay.packed_items
  # Its learner draws 4 batches a TensorFlow call (0.5 ms of its thread's CPU a call).
  assert cpu.replay.batches_per_draw == 4 and MPOConfig().replay.batches_per_draw == 1
  assert MPOConfig.from_dict(registry.get('mpo').preset('published')) == MPOConfig()
  with pytest.raises(ConfigError, match="unknown preset 'gpu' for algorithm 'bc'"):
    registry.get('bc').preset('gpu')


# ---------------------------------------------------------------------------
# Nested configs: from_dict, unknown fields, dotted overrides, legacy keys.
# ---------------------------------------------------------------------------


def test_from_dict_reads_nested_and_dotted_keys_alike():
  nested = MPOConfig.from_dict(
    {'pmpo': {'alpha': 0.25, 'source': 'labels'}, 'replay': {'batch_size': 64}}
  )
  dotted = MPOConfig.from_dict(
    {'pmpo.alpha': 0.25, 'pmpo.source': 'labels', 'replay.batch_size': 64}
  )
  assert nested == dotted
  assert nested.pmpo == PMPOConfig(alpha=0.25, source='labels')
  assert nested.replay == ReplayConfig(batch_size=64)
  assert MPOConfig.from_dict(nested.to_dict()) == nested


def test_a_dotted_override_keeps_the_agents_own_sub_config_defaults():
  from agents.gato.config import GatoConfig
  from agents.planning.config import PlanningConfig

  # Gato's and planning's replay defaults differ from ReplayConfig's: one override of one
  # field must not reset the others to ReplayConfig's (planning would get n_step=5).
  gato = GatoConfig.from_dict({'replay.batch_size': 8})
  assert (gato.replay.batch_size, gato.replay.min_replay_size) == (8, 1)
  planning = PlanningConfig.from_dict({'replay': {'batch_size': 64}})
  assert (planning.replay.batch_size, planning.replay.n_step) == (64, 1)


def test_unknown_fields_are_refused_naming_each_one():
  with pytest.raises(ConfigError) as info:
    MPOConfig.from_dict(
      {'pmpo': {'alpah': 0.5}, 'perceiver.depth': 2, 'no_such': 1, 'replay.batch_size': 8}
    )
  message = str(info.value)
  assert "unknown MPOConfig field(s) ['no_such', 'perceiver.depth', 'pmpo.alpah']" in message
  assert 'pmpo.alpha' in message  # the known ones are listed
  with pytest.raises(ConfigError, match=r"\['batch_size.x'\]"):
    MPOConfig.from_dict({'batch_size.x': 1})  # a leaf is not a sub-config
  with pytest.raises(ConfigError, match='pmpo must be a mapping of PMPOConfig fields'):
    MPOConfig.from_dict({'pmpo': 0.5})


def test_validation_names_the_dotted_field():
  with pytest.raises(ConfigError, match=r'MPOConfig\.pmpo\.fraction=0\.7 is invalid'):
    MPOConfig(pmpo=PMPOConfig(fraction=0.7))
  with pytest.raises(
    ConfigError,
    match=r'MPOConfig\.perceiver\.latent_dim=30 is invalid: must '
    r'be a multiple of num_heads',
  ):
    MPOConfig.from_dict({'perceiver.latent_dim': 30})
  with pytest.raises(ConfigError, match=r'BCConfig\.replay\.max_replay_size=10 is invalid'):
    BCConfig(replay=ReplayConfig(min_replay_size=100, max_replay_size=10))
  with pytest.raises(ConfigError, match=r'MPOConfig\.pac=0\.5 is invalid: must be a PACConfig'):
    MPOConfig(pac=0.5)
  with pytest.raises(ConfigError, match=r'replay\.batches_per_draw=0 is invalid: must be an int'):
    MPOConfig.from_dict({'replay.batches_per_draw': 0})


def test_dotted_overrides_apply_over_a_preset():
  preset = registry.get('mpo').preset('cpu')
  merged = merge_overrides(MPOConfig, preset, {'pmpo.alpha': 0.5}, {'replay.batch_size': 32})
  config = MPOConfig.from_dict(merged)
  assert config.pmpo.alpha == 0.5 and config.replay.batch_size == 32
  assert config.policy_layer_sizes == (256, 256)  # the rest of the preset stays
  assert config.with_overrides({'pac.alpha_schedule': [0.9, 0.1]}).pac == PACConfig(
    alpha_schedule=(0.9, 0.1)
  )


# What earlier runs' config.json held (flat names), and what each means now.
LEGACY = {
  'pmpo_alpha': ('pmpo.alpha', 0.75),
  'pmpo_beta': ('pmpo.beta', 1.0),
  'pmpo_fraction': ('pmpo.fraction', 0.5),
  'pmpo_source': ('pmpo.source', 'labels'),
  'pmpo_success_return': ('pmpo.success_return', 500.0),
  'pmpo_negative_margin': ('pmpo.negative_margin', None),
  'perceiver_latent_dim': ('perceiver.latent_dim', 16),
  'perceiver_num_latents': ('perceiver.num_latents', 4),
  'perceiver_num_heads': ('perceiver.num_heads', 2),
  'perceiver_blocks': ('perceiver.blocks', 3),
  'bc_alpha': ('pac.alpha', 0.25),
  'bc_alpha_schedule': ('pac.alpha_schedule', (0.9, 0.5)),
  'batch_size': ('replay.batch_size', 64),
  'n_step': ('replay.n_step', 3),
  'discount': ('replay.discount', 0.9),
  'min_replay_size': ('replay.min_replay_size', 10),
  'max_replay_size': ('replay.max_replay_size', 100),
  'samples_per_insert': ('replay.samples_per_insert', None),
  'samples_per_insert_tolerance': ('replay.samples_per_insert_tolerance', 0.25),
  'variable_update_period': ('replay.variable_update_period', 7),
}


def _get(config, path):
  for part in path.split('.'):
    config = getattr(config, part)
  return config


def test_legacy_flat_keys_of_stored_runs_still_load():
  old = {
    'policy_layer_sizes': [64, 64],
    'num_atoms': 11,
    'policy_loss': 'pmpo',
    **{k: list(v) if isinstance(v, tuple) else v for k, (_, v) in LEGACY.items()},
  }
  stored = {'mode': 'offline', 'max_learner_steps': 10, 'agent': old}
  config = ExperimentConfig.from_dict(json.loads(json.dumps(stored))).agent
  for key, (path, value) in LEGACY.items():
    assert _get(config, path) == value, key
  assert config.policy_layer_sizes == (64, 64) and config.num_atoms == 11
  # Runs stored before packed items resume with the five columns their tables hold.
  assert config.replay.packed_items is False and config.replay.batches_per_draw == 1
  # Every legacy key of MPOConfig is covered above.
  assert set(MPOConfig.legacy_keys) == set(LEGACY)


def test_legacy_flat_keys_are_accepted_as_overrides_too():
  merged = merge_overrides(
    MPOConfig, {'replay.batch_size': 128}, {'batch_size': 16}, {'pmpo_alpha': 0.1}
  )
  assert merged == {'replay.batch_size': 16, 'pmpo.alpha': 0.1}


def test_legacy_bc_run_holding_a_whole_mpo_config_loads_as_bc():
  """BC runs stored a flat MPOConfig before BC had its own config."""
  old = {
    'policy_layer_sizes': [16, 8],
    'critic_layer_sizes': [8],
    'num_atoms': 51,
    'network': 'mlp',
    'perceiver_blocks': 1,
    'policy_learning_rate': 3e-4,
    'critic_learning_rate': 1e-4,
    'max_grad_norm': 5.0,
    'pmpo_alpha': 0.5,
    'bc_alpha_schedule': None,
    'batch_size': 32,
    'n_step': 5,
    'discount': 0.99,
  }
  config = ExperimentConfig.from_dict({'algorithm': 'bc', 'agent': old}).agent
  assert config == BCConfig(
    policy_layer_sizes=(16, 8),
    learning_rate=3e-4,
    max_grad_norm=5.0,
    replay=ReplayConfig(batch_size=32),
  )
  # A new BC config with an MPO field is refused, not silently trimmed.
  with pytest.raises(ConfigError, match=r"unknown BCConfig field\(s\) \['num_atoms'\]"):
    BCConfig.from_dict({'learning_rate': 1e-3, 'num_atoms': 5})


def test_sub_configs_are_typed_dataclasses():
  config = MPOConfig()
  assert isinstance(config.pmpo, PMPOConfig) and isinstance(config.pac, PACConfig)
  assert isinstance(config.perceiver, PerceiverConfig)
  assert isinstance(config.replay, ReplayConfig) and isinstance(BCConfig().replay, ReplayConfig)
  assert not hasattr(config, 'pmpo_alpha') and not hasattr(config, 'batch_size')
