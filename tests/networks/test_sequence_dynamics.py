"""The shared transformer as a dynamics model (networks.sequence_dynamics)."""

import jax
import jax.numpy as jnp
import numpy as np

from networks import sequence_dynamics as sd
from networks.tokenizer import Vocabulary, flat_layout
from networks.transformer import TransformerSizes, make_transformer

VOCAB = Vocabulary(num_bins=16, num_discrete=0)
LAYOUT = flat_layout(obs_dim=2, action_dim=1, vocab=VOCAB)  # 4 tokens a timestep.
SIZES = TransformerSizes(
  vocab_size=VOCAB.size, num_positions=LAYOUT.num_tokens, max_len=16, model_size=16,
  num_heads=2, num_layers=1,
)  # fmt: skip


def _compiled(fn):
  # Unoptimised compilation, as in test_transformer: compiling is what these tests cost.
  return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0})


def test_the_loss_counts_observation_tokens_after_the_first_timestep_only():
  mask = sd.dynamics_loss_mask(LAYOUT, num_timesteps=3)
  expected = [0, 0, 0, 0] + [1, 1, 0, 0] * 2  # obs, obs, separator, action
  np.testing.assert_array_equal(mask, np.array(expected, bool))


def test_tokens_and_the_greedy_prediction_have_the_right_shapes_and_agree_with_the_logits():
  rng = np.random.default_rng(0)
  obs = rng.uniform(-1, 1, (2, 3, 2)).astype(np.float32)
  actions = rng.uniform(-1, 1, (2, 3, 1)).astype(np.float32)
  tokens, positions = sd.episode_tokens(LAYOUT, obs, actions)
  assert tokens.shape == positions.shape == (2, 12)
  np.testing.assert_array_equal(positions[0], np.tile(np.arange(4), 3))
  assert np.all(tokens[:, 2::4] == VOCAB.separator)
  model = make_transformer(SIZES)
  params = _compiled(model.init)(jax.random.PRNGKey(0), tokens, positions)
  apply = _compiled(model.apply)
  predicted = _compiled(lambda p, t, q: sd.predict_next_observation(model, p, LAYOUT, t, q))(
    params, jnp.asarray(tokens), jnp.asarray(positions)
  )
  assert predicted.shape == (2, 2) and np.all(np.isfinite(predicted))
  # The first feature is the best bin of the full pass's logits after the last action.
  logits = apply(params, tokens, positions)
  first = np.argmax(np.asarray(logits[:, -1, : VOCAB.num_bins]), axis=-1)
  np.testing.assert_allclose(predicted[:, 0], VOCAB.continuous_values(first), rtol=1e-6)
  # The second, fed the first back, matches the full pass over the extended sequence.
  extended = np.concatenate([tokens, first[:, None].astype(np.int32)], axis=1)
  more = np.concatenate([positions, np.zeros((2, 1), np.int32)], axis=1)
  second = np.argmax(np.asarray(apply(params, extended, more)[:, -1, :16]), axis=-1)
  np.testing.assert_allclose(predicted[:, 1], VOCAB.continuous_values(second), rtol=1e-6)
