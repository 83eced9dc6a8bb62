"""Our n-step adder writes exactly the items acme's NStepTransitionAdder writes (real Reverb)."""

import dm_env
import jax
import numpy as np
import pytest
import reverb
from acme import specs
from acme.adders import reverb as reverb_adders

from agents import packed_items
from agents.common.replay_config import ReplayConfig
from agents.nstep_adder import NStepAdder
from agents.replay_pipeline import ReplayPipeline

TABLE = 'priority_table'
SPEC = specs.EnvironmentSpec(
  observations=specs.Array((3,), np.float32),
  actions=specs.BoundedArray((2,), np.float32, -1.0, 1.0),
  rewards=specs.Array((), np.float32),
  discounts=specs.BoundedArray((), np.float32, 0.0, 1.0),
)
# A pixel run with the task's state features beside the image.
IMAGE_SPEC = SPEC._replace(
  observations={
    'features': specs.Array((3,), np.float32),
    'pixels': specs.BoundedArray((4, 4, 6), np.uint8, 0, 255),
  }
)
# float64 rewards and discounts (an environment without acme's SinglePrecisionWrapper):
# the adder's sums take acme's array path.
F64_SPEC = SPEC._replace(
  rewards=specs.Array((), np.float64), discounts=specs.BoundedArray((), np.float64, 0.0, 1.0)
)
# (length, ends by termination): shorter and longer than n, a one-step episode, one longer
# than the writer's chunks (items then arrive mid-episode).
EPISODES = ((1, True), (2, False), (4, True), (7, False), (12, True), (40, False))


def _feed(adder, seed: int, spec=SPEC) -> None:
  rng = np.random.default_rng(seed)
  f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)

  def obs():
    if not isinstance(spec.observations, dict):
      return f32(3)
    return {'features': f32(3), 'pixels': rng.integers(0, 256, (4, 4, 6), dtype=np.uint8)}

  for length, terminates in EPISODES:
    adder.add_first(dm_env.restart(obs()))
    for t in range(1, length + 1):
      last = t == length
      # Discounts other than 0 and 1 too: the products must match acme's, bit for bit.
      discount = spec.discounts.dtype.type(0.0 if last and terminates else rng.choice([1.0, 0.9]))
      reward = spec.rewards.dtype.type(rng.normal())
      step = dm_env.StepType.LAST if last else dm_env.StepType.MID
      adder.add(f32(2), dm_env.TimeStep(step, reward, discount, obs()))


def _items(make_adder, seed: int, spec=SPEC, signature=None):
  if signature is None:
    signature = reverb_adders.NStepTransitionAdder.signature(spec)
  server = reverb.Server([reverb.Table.queue(TABLE, 1000, signature=signature)], port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = make_adder(client)
    _feed(adder, seed, spec)
    del adder
    size = client.server_info()[TABLE].current_size
    samples = client.sample(TABLE, num_samples=size, emit_timesteps=False)
    return [[np.asarray(x) for x in jax.tree_util.tree_leaves(s.data)] for s in samples]
  finally:
    server.stop()


@pytest.mark.parametrize(
  'n_step, spec', [(1, SPEC), (3, SPEC), (5, SPEC), (3, IMAGE_SPEC), (5, F64_SPEC)]
)
def test_items_equal_acmes_in_order_bit_for_bit(n_step, spec):
  acme_items = _items(
    lambda c: reverb_adders.NStepTransitionAdder(c, n_step=n_step, discount=0.99), n_step, spec
  )
  ours = _items(lambda c: NStepAdder(c, n_step, 0.99, TABLE, max_in_flight_items=32), n_step, spec)
  # An item a step, and n - 1 more at each episode's start (acme's shorter first windows).
  steps = sum(length for length, _ in EPISODES)
  starts = sum(min(n_step, length) - 1 for length, _ in EPISODES)
  assert len(acme_items) == steps + starts
  assert len(ours) == len(acme_items)
  # Observation, action, reward, discount, next observation; a dict observation's two.
  assert len(ours[0]) == (7 if spec is IMAGE_SPEC else 5)
  for a, b in zip(acme_items, ours):
    assert [x.dtype for x in a] == [x.dtype for x in b]
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]


@pytest.mark.parametrize('n_step', [1, 5])
def test_packed_items_hold_acmes_numbers_in_one_column(n_step):
  acme_items = _items(
    lambda c: reverb_adders.NStepTransitionAdder(c, n_step=n_step, discount=0.99), n_step
  )
  packed = _items(
    lambda c: NStepAdder(c, n_step, 0.99, TABLE, max_in_flight_items=32, packed=True),
    n_step,
    signature=packed_items.packed_signature(3, 2),
  )
  assert len(packed) == len(acme_items) and all(len(item) == 1 for item in packed)
  rows = np.stack([item[0] for item in packed])
  assert rows.dtype == np.float32 and rows.shape == (len(acme_items), 2 * 3 + 2 + 2)
  fields = packed_items.unpack(rows, 3, 2)
  for i, a in enumerate(acme_items):
    b = [np.asarray(x[i]) for x in fields[:5]]  # The five fields, not extras.
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]


def _check_batches(pipeline: ReplayPipeline, address: str, config: ReplayConfig) -> None:
  """The pipeline's batches hold acme's items (the same _feed, seed 3), with info and data
  split at the same rows."""
  acme_items = _items(
    lambda c: reverb_adders.NStepTransitionAdder(c, n_step=config.n_step, discount=0.99), 3
  )
  known = {b''.join(x.tobytes() for x in item) for item in acme_items}
  iterator = pipeline.make_dataset_iterator(address)
  # Batches come replay.batches_per_draw to a TensorFlow draw: more batches than items
  # (about 80), so keys repeat, and a key's rows must hold one item.
  item_of_key = {}
  for _ in range(20):
    sample = next(iterator)
    batch = sample.data[:5]
    assert [np.shape(x) for x in batch] == [(8, 3), (8, 2), (8,), (8,), (8, 3)]
    assert np.shape(sample.info.key) == (8,)
    for i in range(8):
      item = b''.join(np.ascontiguousarray(x[i]).tobytes() for x in batch)
      assert item in known
      assert item_of_key.setdefault(int(sample.info.key[i]), item) == item
  assert len(item_of_key) < 160


@pytest.mark.parametrize('packed', [True, False])
def test_the_pipeline_packs_state_items_and_gives_back_acmes_transitions(packed):
  config = ReplayConfig(batch_size=8, min_replay_size=1, samples_per_insert=None)
  config.packed_items = packed
  config.batches_per_draw = 4
  pipeline = ReplayPipeline(config, SPEC)
  assert pipeline.packed() == ((3, 2) if packed else None)
  tables = pipeline.make_replay_tables()
  if packed:
    assert tables[0].info.signature == packed_items.packed_signature(3, 2)
  else:
    assert tables[0].info.signature == reverb_adders.NStepTransitionAdder.signature(SPEC)
  server = reverb.Server(tables, port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = pipeline.make_adder(client)
    _feed(adder, seed=3)
    adder.close()
    _check_batches(pipeline, f'localhost:{server.port}', config)
  finally:
    server.stop()
  # Images (a dict of image and features) keep acme's five columns.
  image = ReplayPipeline(config, IMAGE_SPEC)
  assert image.packed() is None
  signature = image.make_replay_tables()[0].info.signature
  assert signature == reverb_adders.NStepTransitionAdder.signature(IMAGE_SPEC)


def test_close_delivers_every_item_and_a_later_episode_opens_a_new_writer():
  signature = reverb_adders.NStepTransitionAdder.signature(SPEC)
  server = reverb.Server([reverb.Table.queue(TABLE, 1000, signature=signature)], port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = NStepAdder(client, 1, 0.99, TABLE, max_in_flight_items=32, keep_alive_steps=16)
    _feed(adder, seed=0)  # Every episode ends: its items are in the table.
    steps = sum(length for length, _ in EPISODES)
    assert client.server_info()[TABLE].current_size == steps
    # Three steps of an episode that goes on: their chunk is not complete, nothing is sent.
    f32 = lambda: np.ones(3, np.float32)  # noqa: E731
    adder.add_first(dm_env.restart(f32()))
    for _ in range(3):
      adder.add(np.zeros(2, np.float32), dm_env.transition(np.float32(1.0), f32(), np.float32(1.0)))
    assert client.server_info()[TABLE].current_size == steps
    adder.close()  # Sends them; nothing of the adder is left for __del__ to flush.
    assert client.server_info()[TABLE].current_size == steps + 3 and adder._writer is None
    adder.close()  # Twice is fine.
    _feed(adder, seed=1)  # A new writer.
    adder.close()
    assert client.server_info()[TABLE].current_size == 2 * steps + 3
  finally:
    server.stop()
