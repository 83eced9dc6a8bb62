"""Tests for the learning-rate course (agents.common.learning_rate) and the optimisers using it."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.bc import learning as bc_learning
from agents.bc.config import BCConfig
from agents.common.errors import ConfigError
from agents.common.learning_rate import LearningRateDecay, learning_rate, with_fresh_courses
from agents.gato import learning as gato_learning
from agents.gato.config import GatoConfig
from agents.mpo import learning as mpo_learning
from agents.mpo.config import MPOConfig

DECAY = LearningRateDecay(steps=4, warmup_steps=2, final_fraction=0.25)
# Peak 2: warm-up counts 0, 1 give 2 * 1/2, 2 * 2/2; then 2 * (0.25 + 0.75 * (1 + cos(pi t)) / 2)
# for t = 0, 1/4, 1/2, 3/4, 1, and the floor 2 * 0.25 after.
HAND = [1.0, 2.0, 2.0, 2 * (0.25 + 0.375 * (1 + math.sqrt(0.5))), 1.25]
HAND += [2 * (0.25 + 0.375 * (1 - math.sqrt(0.5))), 0.5, 0.5, 0.5]


def test_warm_up_then_cosine_decay_to_the_floor_match_hand_computed_values():
  schedule = learning_rate(2.0, DECAY)
  np.testing.assert_allclose([float(schedule(c)) for c in range(len(HAND))], HAND, rtol=1e-6)


def test_decay_alone_starts_at_the_peak_and_warm_up_alone_holds_it():
  decay_only = learning_rate(1.0, LearningRateDecay(steps=2, final_fraction=0.0))
  np.testing.assert_allclose(
    [float(decay_only(c)) for c in range(4)], [1.0, 0.5, 0.0, 0.0], atol=1e-7
  )
  warmup_only = learning_rate(1.0, LearningRateDecay(warmup_steps=4))
  np.testing.assert_allclose([float(warmup_only(c)) for c in range(6)], [0.25, 0.5, 0.75, 1, 1, 1])


def test_the_default_is_the_plain_number_so_kept_optimiser_states_keep_their_layout():
  assert learning_rate(3e-4, LearningRateDecay()) == 3e-4
  params = {'w': jnp.zeros(3)}
  plain = optax.chain(optax.clip_by_global_norm(40.0), optax.adam(1e-4)).init(params)
  kept = mpo_learning.make_optimizers(MPOConfig()).policy.init(params)
  assert jax.tree_util.tree_structure(kept) == jax.tree_util.tree_structure(plain)


def _steps_taken(optimizer: optax.GradientTransformation, count: int) -> np.ndarray:
  """How far each of `count` updates moves a parameter under a constant gradient: Adam's
  step is then the learning rate itself (its moments are the gradient and its square)."""
  params = jnp.zeros(())
  state = optimizer.init(params)
  moves = []
  for _ in range(count):
    updates, state = optimizer.update(jnp.ones(()), state, params)
    moves.append(-float(updates))
    params = optax.apply_updates(params, updates)
  return np.array(moves)


@pytest.mark.parametrize(
  'name, optimizer',
  [
    (
      'mpo policy',
      lambda: (
        mpo_learning.make_optimizers(MPOConfig(policy_learning_rate=2.0, lr_decay=DECAY)).policy
      ),
    ),
    (
      'mpo critic',
      lambda: (
        mpo_learning.make_optimizers(MPOConfig(critic_learning_rate=2.0, lr_decay=DECAY)).critic
      ),
    ),
    ('bc', lambda: bc_learning.make_optimizer(BCConfig(learning_rate=2.0, lr_decay=DECAY))),
    (
      'gato',
      lambda: gato_learning.make_optimizer(
        learning_rate(2.0, DECAY), max_grad_norm=10.0, weight_decay=0.0
      ),
    ),
  ],
)
def test_each_agents_optimiser_steps_by_the_schedule(name, optimizer):
  np.testing.assert_allclose(_steps_taken(optimizer(), len(HAND)), HAND, rtol=1e-4, err_msg=name)


def test_the_duals_keep_their_constant_rate():
  duals = mpo_learning.make_optimizers(MPOConfig(dual_learning_rate=2.0, lr_decay=DECAY)).dual
  np.testing.assert_allclose(_steps_taken(duals, 6), 2.0, rtol=1e-4)


@pytest.mark.parametrize(
  'override, named',
  [
    ({'lr_decay.steps': -1}, 'MPOConfig.lr_decay.steps=-1'),
    ({'lr_decay.warmup_steps': 1.5}, 'MPOConfig.lr_decay.warmup_steps=1.5'),
    ({'lr_decay.final_fraction': float('nan')}, 'MPOConfig.lr_decay.final_fraction=nan'),
    ({'lr_decay.final_fraction': 1.5}, 'MPOConfig.lr_decay.final_fraction=1.5'),
  ],
)
def test_bad_settings_are_rejected_naming_the_field(override, named):
  with pytest.raises(ConfigError, match=named.replace('.', r'\.')):
    MPOConfig().with_overrides(override)


def test_the_generalist_reads_its_course_under_optim():
  config = GatoConfig().with_overrides({'optim.lr_decay.steps': 30000})
  assert config.optim.lr_decay == LearningRateDecay(steps=30000)
  assert GatoConfig.from_dict(config.to_dict()) == config
  with pytest.raises(ConfigError, match=r'GatoConfig\.optim\.lr_decay\.final_fraction=-0\.1'):
    GatoConfig().with_overrides({'optim.lr_decay.final_fraction': -0.1})


def test_a_fine_tuning_run_takes_its_own_course_and_the_checkpoints_moments():
  params = {'w': jnp.zeros(2)}
  constant = mpo_learning.make_optimizers(MPOConfig()).policy
  decaying = mpo_learning.make_optimizers(MPOConfig(lr_decay=DECAY)).policy
  trained = constant.init(params)
  for _ in range(3):
    _, trained = constant.update({'w': jnp.ones(2)}, trained, params)
  fresh = decaying.init(params)
  merged = with_fresh_courses(fresh, trained)
  assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(fresh)
  leaves = jax.tree_util.tree_leaves(merged)
  # The Adam count and moments from the checkpoint (3 updates), the course's count at 0.
  assert [int(x) for x in leaves if x.ndim == 0] == [3, 0]
  np.testing.assert_allclose(leaves[1], 0.1 * (1 - 0.9**3) * 10, rtol=1e-5)  # mu of 3 ones.
  # Another network's moments stay theirs, for the learner's fit check to name.
  other = constant.init({'w': jnp.zeros(3), 'b': jnp.zeros(1)})
  kept = with_fresh_courses(fresh, other)
  assert jax.tree_util.tree_structure(kept[1][0]) == jax.tree_util.tree_structure(other[1][0])
