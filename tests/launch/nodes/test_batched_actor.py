"""A batched actor writes what separate single-environment actors write.

Real Reverb (in-process), real cartpole physics, real store files. The separate actors
are built as ActorWorker builds its actor (acme's EnvironmentLoop, the executed-action
wrapper, the builder's n-step adder and the store recorder).
"""

import gc
import threading

import acme
import dm_env
import jax
import numpy as np
import pytest
import reverb
from acme import specs, wrappers
from acme.adders import reverb as reverb_adders
from acme.utils import counting

from agents.batched_actor import SeparateActors, make_batched_actor
from agents.common.errors import ConfigError
from agents.mpo.batched_actor import MPOBatchedActor
from agents.replay_pipeline import REPLAY_TABLE
from environments.actions import ExecutedActionActor
from launch import experiment
from launch.nodes.actor import actor_seed
from launch.nodes.batched_actor import BatchedActorWorker
from launch.nodes.batched_loop import BatchedEnvironmentLoop
from launch.nodes.counter import PersistentCounter
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from launch.store.recorder import EpisodeRecorder
from tests.e2e_util import wait_for
from tests.fakes import TINY_AGENT, tiny_config

# Stream j's episodes: (steps, whether they terminate with discount 0 or are cut off).
# Their lengths' least common multiple is STEPS: every stream ends an episode there.
EPISODES = ((5, True), (6, False), (10, False))
STEPS = 30
SEEDS = (11, 12, 13)
N_STEP = 3


class _EndsAfter(wrappers.EnvironmentWrapper):
  """Ends each episode after `steps` steps, by termination (discount 0) or truncation."""

  def __init__(self, env: dm_env.Environment, steps: int, terminate: bool):
    super().__init__(env)
    self._steps, self._terminate, self._t = steps, terminate, 0

  def reset(self) -> dm_env.TimeStep:
    self._t = 0
    return self._environment.reset()

  def step(self, action) -> dm_env.TimeStep:
    timestep = self._environment.step(action)
    self._t += 1
    if self._t < self._steps:
      return timestep
    discount = np.zeros_like(timestep.discount) if self._terminate else timestep.discount
    return timestep._replace(step_type=dm_env.StepType.LAST, discount=discount)


class _Params:
  """A fixed policy served as the learner serves it."""

  def __init__(self, params):
    self._params = params

  def get_variables(self, names):
    return [self._params if n == 'policy' else 0 for n in names]


@pytest.fixture(name='setup', scope='module')
def _setup(tmp_path_factory):
  cfg = tiny_config(
    tmp_path_factory.mktemp('batched'), agent={**TINY_AGENT, 'replay.n_step': N_STEP}
  )
  builder = experiment.make_builder(cfg)
  params = builder.make_networks().policy.init(
    jax.random.PRNGKey(0), np.zeros((1, builder.obs_dim), np.float32)
  )
  return cfg, builder, _Params(params)


def _envs(cfg):
  return [
    _EndsAfter(experiment.make_env(cfg, seed=seed), steps, terminate)
    for seed, (steps, terminate) in zip(SEEDS, EPISODES)
  ]


def _recorders(store_dir):
  store = EpisodeStore(store_dir)
  return [
    EpisodeRecorder(store.writer(f'actor_{j}'), metadata={'source': f'actor_{j}', 'seed': s})
    for j, s in enumerate(SEEDS)
  ]


def _items(server: reverb.Server):
  """Every item in the table, each as one tuple of arrays; sorted by their bytes."""
  client = reverb.Client(f'localhost:{server.port}')
  size = client.server_info()[REPLAY_TABLE].current_size
  samples = client.sample(REPLAY_TABLE, num_samples=size, emit_timesteps=False)
  items = [tuple(np.asarray(x) for x in jax.tree_util.tree_leaves(s.data)) for s in samples]
  return sorted(items, key=_bytes)


def _bytes(item) -> tuple:
  return tuple(a.tobytes() for a in item)


def _assert_same_items_to_rounding(got, want, atol: float = 1e-5) -> None:
  """Each item of `got` matches its own item of `want` to `atol`: a bijection."""
  flat = lambda items: np.stack([np.concatenate([a.ravel() for a in i]) for i in items])
  g, w = flat(got).astype(np.float64), flat(want).astype(np.float64)
  assert g.shape == w.shape, (g.shape, w.shape)
  distance = np.abs(g[:, None, :] - w[None, :, :]).max(-1)
  nearest = distance.argmin(1)
  assert sorted(nearest) == list(range(len(w))), 'items do not pair off one to one'
  assert distance.min(1).max() < atol, distance.min(1).max()


def _server(builder):
  signature = reverb_adders.NStepTransitionAdder.signature(builder.spec)
  return reverb.Server([reverb.Table.queue(REPLAY_TABLE, 10_000, signature=signature)], port=None)


def _stored(store_dir):
  store = EpisodeStore(store_dir)
  out = {}
  for info in store.index():
    e = store.read(info.episode_id)
    arrays = (e.observations, e.actions, e.rewards, e.discounts)
    out.setdefault(info.writer, []).append((arrays, e.metadata['seed']))
  return out


def _separate(cfg, builder, source, store_dir):
  server = _server(builder)
  client = reverb.Client(f'localhost:{server.port}')
  spec = specs.make_environment_spec(_envs(cfg)[0])
  for env, seed, recorder, (steps, _) in zip(_envs(cfg), SEEDS, _recorders(store_dir), EPISODES):
    actor = builder.make_actor(source, builder.make_adder(client), seed=seed)
    loop = acme.EnvironmentLoop(
      env, ExecutedActionActor(actor, spec.actions), observers=[recorder], logger=_NoLog()
    )
    for _ in range(STEPS // steps):
      loop.run_episode()
  return server


def _batched(cfg, builder, source, store_dir, separate: bool):
  server = _server(builder)
  client = reverb.Client(f'localhost:{server.port}')
  envs = _envs(cfg)
  stream_adders = [builder.make_adder(client) for _ in envs]
  if separate:  # An agent without make_batched_actor: K of its actors side by side.
    actor = SeparateActors(
      [builder.make_actor(source, a, seed=s) for a, s in zip(stream_adders, SEEDS)]
    )
  else:
    actor = make_batched_actor(builder, source, stream_adders, SEEDS)
    assert isinstance(actor, MPOBatchedActor)
  counter = counting.Counter()
  loop = BatchedEnvironmentLoop(
    envs,
    actor,
    specs.make_environment_spec(envs[0]).actions,
    counter=counter,
    observers=[[r] for r in _recorders(store_dir)],
  )
  ended = [r['stream'] for _ in range(STEPS) for r in loop.step()]
  assert sorted(ended) == sorted(j for j, (n, _) in enumerate(EPISODES) for _ in range(STEPS // n))
  assert loop.steps_in_progress() == 0
  assert counter.get_counts() == {'episodes': len(ended), 'steps': 3 * STEPS}
  return server


class _NoLog:
  def write(self, data):
    del data


@pytest.fixture(name='reference', scope='module')
def _reference(setup, tmp_path_factory):
  """What three single-environment actors write: (replay items, stored episodes)."""
  cfg, builder, source = setup
  store_dir = tmp_path_factory.mktemp('single')
  server = _separate(cfg, builder, source, store_dir)
  try:
    return _items(server), _stored(store_dir)
  finally:
    server.stop()


@pytest.mark.parametrize('separate', [False, True], ids=['batched_policy', 'separate_actors'])
def test_k_streams_write_what_k_single_actors_write(setup, reference, tmp_path, separate):
  cfg, builder, source = setup
  want_items, want = reference
  server = _batched(cfg, builder, source, tmp_path, separate)
  try:
    got_items = _items(server)
  finally:
    server.stop()
  # acme's adder writes an item per step, plus n_step - 1 at each episode's start (its
  # first state with 1.. n_step - 1 step returns too). Observations, actions, n-step
  # reward sums, discounts and next observations (episode ends) are all in the bytes.
  episodes = sum(STEPS // n for n, _ in EPISODES)
  assert len(want_items) == 3 * STEPS + episodes * (N_STEP - 1)
  if separate:
    assert list(map(_bytes, got_items)) == list(map(_bytes, want_items))
  else:
    # One policy call for all K streams is a batch-K matrix product, which XLA may round
    # differently from K batch-1 products: equal to float32 rounding, not bit for bit (an
    # AMD EPYC host differed by 1 ulp in one action; earlier hosts matched exactly).
    _assert_same_items_to_rounding(got_items, want_items)
  got = _stored(tmp_path)
  assert sorted(got) == ['actor_0', 'actor_1', 'actor_2']
  for writer in want:
    assert len(got[writer]) == len(want[writer]) == STEPS // EPISODES[int(writer[-1])][0]
    for (g, g_seed), (w, w_seed) in zip(got[writer], want[writer]):
      assert g_seed == w_seed
      for g_array, w_array in zip(g, w):
        if separate:
          np.testing.assert_array_equal(g_array, w_array)
        else:
          np.testing.assert_allclose(g_array, w_array, rtol=0, atol=1e-5)
  # The streams differ (own seeds, own exploration): not one stream written three times.
  firsts = [got[f'actor_{j}'][0][0][1][0] for j in range(3)]
  assert not np.array_equal(firsts[0], firsts[1]) and not np.array_equal(firsts[1], firsts[2])


def test_the_actor_node_runs_its_streams_as_separate_actors(setup, tmp_path):
  """The node as the program makes it: actor 1 of a run with 2 environments an actor."""
  _, builder, source = setup
  cfg = tiny_config(tmp_path / 'run', num_actors=2, envs_per_actor=2)
  server = reverb.Server(builder.make_replay_tables(), port=None)
  counter = PersistentCounter(str(tmp_path / 'run'))
  stop = threading.Event()
  try:
    worker = BatchedActorWorker(
      cfg.to_dict(), 1, reverb.Client(f'localhost:{server.port}'), source, counter
    )
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    # Both environments end their first (1000-step) episode at the same step.
    wait_for(lambda: counter.get_counts().get('actor_episodes', 0) >= 2, 60, 'two episodes')
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    streams, seeds, cut = worker.streams, worker.seeds, worker._loop.steps_in_progress()
    del worker, thread  # Its writers go before the server (or each waits 10 s to flush).
    gc.collect()
  finally:
    stop.set()
    server.stop()
  assert streams == [2, 3]
  assert seeds == [actor_seed(0, 2, 0), actor_seed(0, 3, 0)]
  counts = counter.get_counts()
  # The episodes the stop cut short count too (the replay holds their steps).
  assert counts['actor_steps'] == 1000 * counts['actor_episodes'] + cut
  store = EpisodeStore(RunDir(cfg.run_dir).store)
  infos = {info.writer: info for info in store.index()}
  assert set(infos) == {'actor_2', 'actor_3'}
  for stream, seed in zip(streams, seeds):
    info = infos[f'actor_{stream}']
    assert info.metadata['source'] == f'actor_{stream}' and info.metadata['seed'] == seed
    # Its first episode starts where a single actor seeded so would start.
    first = experiment.make_env(cfg, seed=seed).reset().observation
    np.testing.assert_array_equal(store.read(info.episode_id).observations[0], first)
  log = (tmp_path / 'run' / 'logs' / 'actor_1' / 'logs.csv').read_text().splitlines()
  header = log[0].split(',')
  assert {row.split(',')[header.index('stream')] for row in log[1:]} >= {'2', '3'}


@pytest.mark.parametrize(
  'values',
  [{'envs_per_actor': 0}, {'envs_per_actor': 2.0}, {'envs_per_actor': 2, 'mode': 'iterated'}],
)
def test_bad_envs_per_actor_is_one_line_naming_it(tmp_path, values):
  with pytest.raises(ConfigError, match=r'^envs_per_actor=.* is invalid'):
    tiny_config(tmp_path, **values)
