"""The data pipeline the agents share: n-step transitions through Reverb into batches.

`ReplayPipeline` builds its pieces (tables, rate limiter, adders, dataset iterator) from an
agent's `replay` sub-config (agents.common.replay_config.ReplayConfig). A builder derives
from it and adds its networks, learner and actor, so a program collects the same data for
any agent.
"""

from typing import TYPE_CHECKING, Iterator, List, Optional, Tuple

from acme import adders, specs

from agents.common.logs import get_logger
from agents.common.observations import is_pixels
from agents.common.replay_config import ReplayConfig
from agents.packed_items import packed_sizes

# Reverb (and acme's Reverb adders, and our adder on Reverb's writer) import TensorFlow: the
# methods that need them import them, so that a robot, which builds only its actor from a
# builder, starts without either (tests/launch/robot/test_robot_imports.py).
if TYPE_CHECKING:
  import reverb

REPLAY_TABLE = 'priority_table'
# Experience from actors outside the program (robots attached with launch.attach).
# Its rate limiter never holds an insert: a robot's data must never wait. (Its
# name sorts after REPLAY_TABLE, so listings by name, such as the replay node's
# restored table sizes, still start with the main table.)
EXTERNAL_TABLE = 'robot_table'
# Unconfirmed items an actor's writer may hold before `add` blocks. An item waits
# for the chunk holding its last step, and chunks span up to n_step + 1 steps: at
# acme's 5 nearly every flush forced a premature chunk and a wait for the server
# (about 70 us per step here). A rate-limited actor runs at most this many items
# ahead of the limiter; what the table holds is the same.
ADDER_MAX_IN_FLIGHT_ITEMS = 32

log = get_logger('replay')


def check_spec(spec: specs.EnvironmentSpec) -> None:
  """The agents need one flat float observation (or one uint8 image [H, W, C], a pixel
  task's, alone or as {'features': [F], 'pixels': image}) and a bounded action vector."""
  obs, act = spec.observations, spec.actions
  if not is_pixels(obs) and (not hasattr(obs, 'shape') or len(obs.shape) != 1):
    raise ValueError(
      f'expected one flat observation vector, a uint8 image or {{"features", "pixels"}}, got '
      f'{obs}; wrap the environment with acme.wrappers.ConcatObservationWrapper'
    )
  if not isinstance(act, specs.BoundedArray) or len(act.shape) != 1:
    raise ValueError(f'expected a bounded action vector, got {act}')


class ReplayPipeline:
  """Tables, adders and dataset of n-step transitions for one environment spec."""

  def __init__(self, replay: ReplayConfig, spec: specs.EnvironmentSpec):
    self.replay_config = replay
    self.spec = spec
    self._packed_said = False

  def packed(self) -> Optional[Tuple[int, int]]:
    """(observation size, action size) when items are packed into one column
    (`replay.packed_items` and a flat float32 observation), else None."""
    if not self.replay_config.packed_items:
      return None
    sizes = packed_sizes(self.spec)
    if sizes is None and not self._packed_said:
      self._packed_said = True
      log.info(
        'replay.packed_items: the observation is not one float32 vector (%s); items keep '
        "acme's five columns",
        self.spec.observations,
      )
    return sizes

  def make_rate_limiter(self) -> 'reverb.rate_limiters.RateLimiter':
    import reverb

    c = self.replay_config
    if c.samples_per_insert is None:
      return reverb.rate_limiters.MinSize(c.min_replay_size)
    # Learner and actors may drift from the target ratio by this many samples.
    error_buffer = max(
      c.min_replay_size * c.samples_per_insert_tolerance * c.samples_per_insert, 2.0 * c.batch_size
    )
    return reverb.rate_limiters.SampleToInsertRatio(
      samples_per_insert=c.samples_per_insert,
      min_size_to_sample=c.min_replay_size,
      error_buffer=error_buffer,
    )

  def make_replay_tables(self) -> List['reverb.Table']:
    import reverb
    from acme.adders import reverb as reverb_adders

    from agents.packed_items import packed_signature

    sizes = self.packed()
    if sizes is None:
      signature = reverb_adders.NStepTransitionAdder.signature(self.spec)
    else:
      signature = packed_signature(*sizes)
    return [
      reverb.Table(
        name=REPLAY_TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=self.replay_config.max_replay_size,
        rate_limiter=self.make_rate_limiter(),
        signature=signature,
      ),
      # MinSize(1) only gates sampling; inserts are never blocked.
      reverb.Table(
        name=EXTERNAL_TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=self.replay_config.max_replay_size,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=signature,
      ),
    ]

  def make_adder(self, client: 'reverb.Client') -> adders.Adder:
    """The actors' adder: acme's n-step transitions into REPLAY_TABLE, written by our
    cheaper NStepAdder (the same items, tests/agents/test_nstep_adder.py)."""
    from agents.nstep_adder import NStepAdder

    return NStepAdder(
      client,
      self.replay_config.n_step,
      self.replay_config.discount,
      REPLAY_TABLE,
      max_in_flight_items=ADDER_MAX_IN_FLIGHT_ITEMS,
      packed=self.packed() is not None,
    )

  def make_external_adder(self, client: 'reverb.Client') -> adders.Adder:
    """The n-step adder of attached (external) actors: the same items (our NStepAdder, as
    the actors'), into EXTERNAL_TABLE. The gateway adds whole episodes at a time."""
    from agents.nstep_adder import NStepAdder

    return NStepAdder(
      client,
      self.replay_config.n_step,
      self.replay_config.discount,
      EXTERNAL_TABLE,
      max_in_flight_items=ADDER_MAX_IN_FLIGHT_ITEMS,
      packed=self.packed() is not None,
    )

  def make_dataset_iterator(
    self,
    server_address: str,
    rate_limiter_timeout_ms: int = -1,
    batch_size: Optional[int] = None,
    table: str = REPLAY_TABLE,
  ) -> Iterator['reverb.ReplaySample']:
    """Batches of transitions as numpy (acme's Transition in `.data`, packed items too).

    With a timeout, the iterator ends (StopIteration) when the rate limiter
    blocks that long, so a learner can notice shutdown instead of hanging (the
    batches of a draw it could not complete are dropped).
    """
    import reverb
    import tensorflow as tf

    batch_size = batch_size or self.replay_config.batch_size
    # Images draw one batch a call: their updates are slow and their draws large.
    per_draw = 1 if is_pixels(self.spec.observations) else self.replay_config.batches_per_draw
    dataset = reverb.TrajectoryDataset.from_table_signature(
      server_address=server_address,
      table=table,
      max_in_flight_samples_per_worker=2 * self.replay_config.batch_size,
      rate_limiter_timeout_ms=rate_limiter_timeout_ms,
    )
    dataset = dataset.batch(per_draw * batch_size, drop_remainder=True)
    draws = dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    return _batches(draws, per_draw, batch_size, self.packed())


def _batches(
  draws: Iterator['reverb.ReplaySample'],
  per_draw: int,
  batch_size: int,
  packed: Optional[Tuple[int, int]],
) -> Iterator['reverb.ReplaySample']:
  """Each draw of `per_draw` batches as that many ReplaySamples of `batch_size` (views),
  packed rows split into acme's Transition."""
  import reverb
  import tree

  from agents.packed_items import unpack

  for draw in draws:
    for i in range(per_draw):
      rows = slice(i * batch_size, (i + 1) * batch_size)
      info = type(draw.info)(*(x[rows] for x in draw.info))
      if packed is None:
        data = tree.map_structure(lambda x: x[rows], draw.data)  # noqa: B023
      else:
        data = unpack(draw.data[rows], *packed)
      yield reverb.ReplaySample(info, data)
