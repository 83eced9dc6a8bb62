"""The robot gateway against bad input: a real gateway node served in this process on
127.0.0.1, a real Reverb server with the builder's tables, a real store on disk.

Every case sends what a robot (or anyone who reaches the port) might: pickles, oversized
episodes, wrong dtypes and shapes, NaN and Inf, bad metadata, truncated and corrupted
frames, a wrong or missing token, replayed deliveries. Each must end in a clear refusal
that names what was wrong, with the store and both replay tables exactly as they were
apart from accepted data; nothing sent is ever unpickled. The module tallies the cases
tried and refused and prints the count at its end.
"""

import collections
import io
import json
import os
import pickle
import socket
import stat
import struct
import threading
import types

import grpc
import numpy as np
import pytest
import reverb

from agents.replay_pipeline import EXTERNAL_TABLE, REPLAY_TABLE
from launch import experiment
from launch.nodes.gateway import GatewayWorker
from launch.robot import protocol
from launch.robot.frame import encode_frame
from launch.robot.gateway import bind_address
from launch.robot.wire import EPISODE_KEY, episode_to_data
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from tests.fakes import TINY_AGENT, random_episode, tiny_config

MAX_STEPS = 50
MAX_MB = 0.05  # 52428 bytes of arrays: a 60-step episode of 5 floats is 1.6 KB.
N_STEP = 3

TALLY = collections.Counter()  # Cases tried, and refused as they should be.


class Marker:
  """Unpickling it creates `path`: the proof that a pickle ran."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (open, (self.path, 'w'))


class FakeLearner:
  """The learner's variable source, as the gateway node calls it in one process."""

  def __init__(self):
    self.steps = 7
    self.params = {'mlp/~/linear_0': {'w': np.ones((5, 4), np.float32), 'b': np.zeros(4)}}

  def get_variables(self, names):
    return [self.steps if n == 'learner_steps' else self.params for n in names]


@pytest.fixture(name='gw', scope='module')
def _gateway(tmp_path_factory):
  root = tmp_path_factory.mktemp('gateway')
  cfg = tiny_config(
    root / 'run',
    external_max_episode_steps=MAX_STEPS,
    external_max_episode_mb=MAX_MB,
    agent=dict(TINY_AGENT, replay=dict(TINY_AGENT['replay'], n_step=N_STEP)),
  )
  run = RunDir(cfg.run_dir)
  run.create()
  builder = experiment.make_builder(cfg)
  server = reverb.Server(builder.make_replay_tables(), port=None)
  replay = f'localhost:{server.port}'
  learner = FakeLearner()
  worker = GatewayWorker(cfg.to_dict(), learner, replay, 'localhost:0')
  stop = threading.Event()
  thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
  thread.start()
  assert worker.serving.wait(30)
  channel = grpc.insecure_channel(worker.address)
  token = run.gateway_token.read_text().strip()
  gw = types.SimpleNamespace(
    cfg=cfg,
    spec=builder.spec,
    worker=worker,
    address=worker.address,
    channel=channel,
    token=token,
    run=run,
    replay=reverb.Client(replay),
    learner=learner,
    marker=root / 'unpickled',
    keys=iter(range(10**6)),
  )
  yield gw
  channel.close()
  stop.set()
  thread.join(timeout=30)
  server.stop()
  # The marker is checked after every case too; this is the last word.
  assert not gw.marker.exists(), 'something the gateway received was unpickled'


def _metadata(gw, token):
  """The call's metadata: None no token, '' the run's, a string that token, or a function's."""
  if token is None:
    return ()
  if callable(token):
    return token(gw)
  return protocol.auth_metadata(token or gw.token)


def _call(gw, method, payload, token=''):
  """(status code, reply bytes or the error's details) of one raw call."""
  call = gw.channel.unary_unary(protocol.method_path(method))
  metadata = _metadata(gw, token)
  try:
    return grpc.StatusCode.OK, call(payload, timeout=20, metadata=metadata)
  except grpc.RpcError as e:
    return e.code(), e.details()


def _snapshot(gw):
  """What must not change on a refusal: episodes in the store, items in both tables."""
  assert gw.worker.inserter.flush(30), 'the gateway never finished its replay inserts'
  store = EpisodeStore(gw.run.store, verify=False) if gw.run.store.exists() else None
  info = gw.replay.server_info(timeout=10)
  return (
    len(store) if store is not None else 0,
    int(info[REPLAY_TABLE].current_size),
    int(info[EXTERNAL_TABLE].current_size),
  )


def _data(gw, steps=10, **metadata):
  episode = random_episode(
    np.random.default_rng(steps),
    steps,
    obs_shape=gw.spec.observations.shape,
    action_shape=gw.spec.actions.shape,
  )
  data = episode_to_data(episode)
  data['metadata'] = {
    'robot': 'arm',
    'task': gw.cfg.task,
    'policy_version': [1, 2],
    EPISODE_KEY: f'tok:{next(gw.keys)}',
    **metadata,
  }
  return data


def _episode_frame(gw, change=None, robot='arm', steps=10):
  data = _data(gw, steps)
  if change is not None:
    change(data)
  return protocol.episode_request(robot, data)


def _set(field, index, value):
  def change(data):
    data[field] = np.array(data[field])
    data[field][index] = value

  return change


def _raw_episode(gw, header_change=None, payload_change=None):
  """A good episode frame taken apart: its header edited as JSON, its bytes as bytes."""
  frame = _episode_frame(gw)
  (length,) = struct.unpack('>I', frame[:4])
  header = json.loads(frame[4 : 4 + length])
  payload = frame[4 + length :]
  if header_change is not None:
    header_change(header)
  if payload_change is not None:
    payload = payload_change(payload)
  text = json.dumps(header).encode()
  return struct.pack('>I', len(text)) + text + payload


def _entry(name):
  def get(header):
    return next(e for e in header['arrays'] if e['name'] == name)

  return get


# ----------------------------------------------------------------------------
# The cases. Each: (what, method, make the payload from gw, token, expected), where
# expected is ('rejected', start of the reason) for an AppendEpisode the gateway answers,
# or a gRPC status code and a part of its details.

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED
A, H, P = protocol.APPEND, protocol.HELLO, protocol.PARAMETERS
BAD_FRAME = 'a malformed episode frame: '
REASON = 'arm: episode tok:'  # The sink's reasons name the robot and the episode key.


def _pickled(gw):
  return pickle.dumps({'observations': Marker(gw.marker), 'metadata': {}})


def _flip(frame: bytes, index: int) -> bytes:
  return frame[:index] + bytes([frame[index] ^ 0x01]) + frame[index + 1 :]


def _npy_pickle(gw):
  buffer = io.BytesIO()
  np.save(buffer, np.array([Marker(gw.marker)], dtype=object), allow_pickle=True)
  return buffer.getvalue()


CASES = [
  # The token, before anything is decoded.
  ('no token: append', A, _episode_frame, None, (UNAUTHENTICATED, 'token is missing')),
  ('no token: hello', H, lambda gw: encode_frame({}), None, (UNAUTHENTICATED, 'missing')),
  ('no token: parameters', P, lambda gw: encode_frame({}), None, (UNAUTHENTICATED, 'missing')),
  ('no token: a pickle', A, _pickled, None, (UNAUTHENTICATED, 'missing')),
  ('wrong token', A, _episode_frame, 'x' * 43, (UNAUTHENTICATED, 'token is wrong')),
  ('empty token', H, lambda gw: encode_frame({}), 'e', (UNAUTHENTICATED, 'token is wrong')),
  (
    'token without the Bearer scheme',
    H,
    lambda gw: encode_frame({}),
    lambda gw: ((protocol.AUTH_KEY, gw.token),),
    (UNAUTHENTICATED, 'wrong'),
  ),
  (
    'token one character short',
    P,
    lambda gw: encode_frame({}),
    lambda gw: protocol.auth_metadata(gw.token[:-1]),
    (UNAUTHENTICATED, 'wrong'),
  ),
  ('unknown method', 'RunCode', lambda gw: b'', '', (grpc.StatusCode.UNIMPLEMENTED, '')),
  # Pickles, in every place one might hide.
  ('a pickle as the episode', A, _pickled, '', ('rejected', BAD_FRAME + 'header length')),
  ('a pickle as the hello', H, _pickled, '', (INVALID, 'Hello: header length')),
  ('a pickle as the parameters request', P, _pickled, '', (INVALID, 'GetParameters: header')),
  (
    'a pickle after a frame header',
    A,
    lambda gw: (lambda b: b[:4] + b[4:8] + pickle.dumps(Marker(gw.marker)))(encode_frame({})),
    '',
    ('rejected', BAD_FRAME + 'header'),
  ),
  (
    'a pickle as uint8 observations',
    A,
    lambda gw: _episode_frame(
      gw,
      lambda d: d.update(observations=np.frombuffer(pickle.dumps(Marker(gw.marker)), np.uint8)),
    ),
    '',
    ('rejected', REASON),
  ),
  (
    'an object dtype in the header',
    A,
    lambda gw: _raw_episode(gw, lambda h: _entry('observations')(h).update(dtype='O')),
    '',
    ('rejected', BAD_FRAME + "array 'observations': dtype 'O' is not one of"),
  ),
  (
    'an np.save of an object array',
    A,
    _npy_pickle,
    '',
    ('rejected', BAD_FRAME + 'header length'),
  ),
  # Sizes.
  (
    'more steps than the limit',
    A,
    lambda gw: _episode_frame(gw, steps=MAX_STEPS + 10),
    '',
    ('rejected', REASON),
  ),
  (
    'arrays over the byte limit',
    A,
    lambda gw: _episode_frame(
      gw, lambda d: d.update(observations=np.zeros((11, 2000), np.float32))
    ),
    '',
    ('rejected', BAD_FRAME + "array 'observations': the arrays declare more than the limit"),
  ),
  (
    'a message over the transport limit',
    A,
    lambda gw: b'\0' * (2 << 20),
    '',
    (TOO_BIG, 'larger than max'),
  ),
  (
    'a message over the transport limit, no token',
    A,
    lambda gw: b'\0' * (2 << 20),
    None,
    (TOO_BIG, 'larger than max'),
  ),
  (
    'a huge declared shape',
    A,
    lambda gw: _raw_episode(
      gw, lambda h: _entry('actions')(h).update(shape=[2**40, 1], nbytes=2**42)
    ),
    '',
    ('rejected', BAD_FRAME + "array 'actions': the arrays declare more than the limit"),
  ),
  (
    'extra arrays',
    A,
    lambda gw: _raw_episode(
      gw,
      lambda h: h['arrays'].extend(
        {'name': name, 'dtype': 'uint8', 'shape': [3], 'offset': 0, 'nbytes': 3}
        for name in ('code', 'more')
      ),
    ),
    '',
    # Four arrays, and the features beside camera images when a run has them.
    ('rejected', BAD_FRAME + 'arrays: 6 arrays, more than the limit of 5'),
  ),
  # Dtypes and shapes.
  (
    'float64 observations',
    A,
    lambda gw: _episode_frame(gw, lambda d: d.update(observations=d['observations'].astype(float))),
    '',
    ('rejected', REASON),
  ),
  (
    'int32 actions',
    A,
    lambda gw: _episode_frame(gw, lambda d: d.update(actions=d['actions'].astype(np.int32))),
    '',
    ('rejected', REASON),
  ),
  (
    'bool rewards',
    A,
    lambda gw: _episode_frame(gw, lambda d: d.update(rewards=d['rewards'] > 0)),
    '',
    ('rejected', REASON),
  ),
  (
    'one observation too few',
    A,
    lambda gw: _episode_frame(gw, lambda d: d.update(observations=d['observations'][:-1])),
    '',
    ('rejected', REASON),
  ),
  (
    'observations too narrow',
    A,
    lambda gw: _episode_frame(gw, lambda d: d.update(observations=d['observations'][:, :3])),
    '',
    ('rejected', REASON),
  ),
  (
    'rewards with an extra axis',
    A,
    lambda gw: _episode_frame(gw, lambda d: d.update(rewards=d['rewards'][:, None])),
    '',
    ('rejected', REASON),
  ),
  (
    'no steps at all',
    A,
    lambda gw: _episode_frame(gw, steps=0),
    '',
    ('rejected', REASON),
  ),
  (
    'a field missing',
    A,
    lambda gw: _raw_episode(gw, lambda h: h['arrays'].pop()),
    '',
    ('rejected', BAD_FRAME + 'frame: '),
  ),
  (
    'declared shape and bytes disagree',
    A,
    lambda gw: _raw_episode(gw, lambda h: _entry('rewards')(h).update(shape=[3])),
    '',
    ('rejected', BAD_FRAME + "array 'rewards': shape (3,) of float32 is 12 bytes"),
  ),
  # Values.
  (
    'NaN observation',
    A,
    lambda gw: _episode_frame(gw, _set('observations', (3, 1), np.nan)),
    '',
    ('rejected', REASON),
  ),
  (
    'Inf reward',
    A,
    lambda gw: _episode_frame(gw, _set('rewards', 2, np.inf)),
    '',
    ('rejected', REASON),
  ),
  (
    '-Inf action',
    A,
    lambda gw: _episode_frame(gw, _set('actions', (4, 0), -np.inf)),
    '',
    ('rejected', REASON),
  ),
  (
    'NaN discount',
    A,
    lambda gw: _episode_frame(gw, _set('discounts', 0, np.nan)),
    '',
    ('rejected', REASON),
  ),
  (
    'discount above 1',
    A,
    lambda gw: _episode_frame(gw, _set('discounts', 5, 1.5)),
    '',
    ('rejected', REASON),
  ),
  (
    'action out of bounds',
    A,
    lambda gw: _episode_frame(gw, _set('actions', (1, 0), 3.0)),
    '',
    ('rejected', REASON),
  ),
  (
    'NaN in the metadata JSON',
    A,
    lambda gw: _episode_frame(gw).replace(b'"policy_version":[1,2]', b'"policy_version":NaN  '),
    '',
    ('rejected', BAD_FRAME + 'header: NaN is not plain JSON'),
  ),
  # Metadata.
  (
    'metadata a list',
    A,
    lambda gw: _raw_episode(gw, lambda h: h['meta'].update(metadata=[1, 2])),
    '',
    ('rejected', 'arm: episode ?: metadata: expected a dict, got list'),
  ),
  (
    'robot name a number',
    A,
    lambda gw: _raw_episode(gw, lambda h: h['meta'].update(robot=5)),
    '',
    ('rejected', BAD_FRAME + 'meta.robot: expected a string, got int'),
  ),
  (
    'an unknown meta key',
    A,
    lambda gw: _raw_episode(gw, lambda h: h['meta'].update(run='rm -rf /')),
    '',
    ('rejected', BAD_FRAME + "meta: expected the keys ['metadata', 'robot']"),
  ),
  (
    'episode key missing',
    A,
    lambda gw: _episode_frame(gw, lambda d: d['metadata'].pop(EPISODE_KEY)),
    '',
    ('rejected', f'arm: episode ?: metadata {EPISODE_KEY!r} is missing'),
  ),
  (
    'episode key a number',
    A,
    lambda gw: _episode_frame(gw, lambda d: d['metadata'].update({EPISODE_KEY: 5})),
    '',
    ('rejected', 'arm: episode ?: metadata'),
  ),
  (
    'success a string',
    A,
    lambda gw: _episode_frame(gw, lambda d: d['metadata'].update(success='yes')),
    '',
    ('rejected', REASON),
  ),
  (
    'policy_version backwards',
    A,
    lambda gw: _episode_frame(gw, lambda d: d['metadata'].update(policy_version=[5, 2])),
    '',
    ('rejected', REASON),
  ),
  (
    'nested metadata',
    A,
    lambda gw: _episode_frame(gw, lambda d: d['metadata'].update(extra={'code': 'x'})),
    '',
    ('rejected', REASON),
  ),
  (
    'a metadata key too long',
    A,
    lambda gw: _episode_frame(gw, lambda d: d['metadata'].update({'k' * 65: 1})),
    '',
    ('rejected', REASON),
  ),
  (
    'huge metadata',
    A,
    lambda gw: _episode_frame(gw, lambda d: d['metadata'].update(note='x' * 20_000)),
    '',
    ('rejected', REASON),
  ),
  (
    'a robot name with a path in it',
    A,
    lambda gw: _episode_frame(gw, robot='../../etc'),
    '',
    ('rejected', ''),
  ),
  # Truncated and corrupted frames.
  ('empty', A, lambda gw: b'', '', ('rejected', BAD_FRAME + 'header length: the frame has 0')),
  (
    'truncated by one byte',
    A,
    lambda gw: _episode_frame(gw)[:-1],
    '',
    ('rejected', BAD_FRAME + "array 'discounts': bytes"),
  ),
  (
    'cut inside the header',
    A,
    lambda gw: _episode_frame(gw)[:40],
    '',
    ('rejected', BAD_FRAME + 'header length: '),
  ),
  (
    'header length corrupted',
    A,
    lambda gw: b'\xff\xff\xff\xff' + _episode_frame(gw)[4:],
    '',
    ('rejected', BAD_FRAME + 'header length: 4294967295 bytes, more than the limit'),
  ),
  (
    'a header byte flipped',
    A,
    lambda gw: _flip(_episode_frame(gw), 4),
    '',
    ('rejected', BAD_FRAME + 'header: not JSON'),
  ),
  ('garbage', A, lambda gw: os.urandom(5000), '', ('rejected', BAD_FRAME)),
  (
    'payload bytes appended',
    A,
    lambda gw: _episode_frame(gw) + b'\0' * 16,
    '',
    ('rejected', BAD_FRAME + 'frame: 16 bytes after the last array'),
  ),
  (
    'an array offset beyond the frame',
    A,
    lambda gw: _raw_episode(gw, lambda h: _entry('discounts')(h).update(offset=10**6)),
    '',
    ('rejected', BAD_FRAME + "array 'discounts': offset 1000000 leaves a gap"),
  ),
  (
    'overlapping arrays',
    A,
    lambda gw: _raw_episode(gw, lambda h: _entry('actions')(h).update(offset=0)),
    '',
    ('rejected', BAD_FRAME + "array 'actions': offset 0 overlaps the previous array"),
  ),
]


@pytest.mark.parametrize('what,method,make,token,expected', CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(gw, what, method, make, token, expected):
  TALLY['tried'] += 1
  before = _snapshot(gw)
  refused_before = gw.worker.gateway.refused
  code, reply = _call(gw, method, make(gw), token)
  kind, message = expected
  if kind == 'rejected':
    assert code == OK, (what, code, reply)
    answer = protocol.read_reply(reply)
    assert answer['status'] == 'rejected', (what, answer)
    assert answer['reason'].startswith(message), (what, answer['reason'])
    assert set(answer) == {'status', 'reason'}
  else:
    assert code == kind, (what, code, reply)
    assert message in reply, (what, reply)
  if kind == UNAUTHENTICATED:
    assert gw.worker.gateway.refused == refused_before + 1
  assert _snapshot(gw) == before, f'{what}: the store or replay changed'
  assert not gw.marker.exists(), f'{what}: something was unpickled'
  TALLY['refused'] += 1


def test_replayed_deliveries_are_stored_and_inserted_once(gw):
  TALLY['tried'] += 3
  data = _data(gw, steps=12)
  frame = protocol.episode_request('arm', data)
  before = _snapshot(gw)
  code, reply = _call(gw, A, frame)
  first = protocol.read_reply(reply)
  assert code == OK and first['status'] == 'stored', first
  stored = _snapshot(gw)
  transitions = 12 - 1 + min(N_STEP, 12)
  assert stored == (before[0] + 1, before[1], before[2] + transitions)
  # The same bytes again (a lost acknowledgement, or a recording replayed).
  code, reply = _call(gw, A, frame)
  assert protocol.read_reply(reply) == {'status': 'duplicate', 'id': first['id']}
  assert _snapshot(gw) == stored
  # The same key with other content: still the first episode, nothing new.
  changed = dict(data, rewards=np.full(12, 100.0, np.float32))
  code, reply = _call(gw, A, protocol.episode_request('arm', changed))
  assert protocol.read_reply(reply) == {'status': 'duplicate', 'id': first['id']}
  assert _snapshot(gw) == stored
  # A fresh gateway over the same store (a relaunch) knows it too.
  gw.worker.sink.close()  # As at a stop: the writer is free (it reopens on the next episode).
  again = GatewayWorker(gw.cfg.to_dict(), gw.learner, 'localhost:1', 'localhost:0')
  stop = threading.Event()
  thread = threading.Thread(target=again.run, args=(stop,), daemon=True)
  thread.start()
  try:
    assert again.serving.wait(30)
    with grpc.insecure_channel(again.address) as channel:
      call = channel.unary_unary(protocol.method_path(A))
      reply = call(frame, timeout=20, metadata=protocol.auth_metadata(gw.token))
    assert protocol.read_reply(reply) == {'status': 'duplicate', 'id': first['id']}
  finally:
    stop.set()
    thread.join(timeout=30)
  assert _snapshot(gw) == stored
  TALLY['refused'] += 3  # Each replay acknowledged as a duplicate, nothing stored again.
  [info] = [
    i
    for i in EpisodeStore(gw.run.store).index()
    if i.metadata.get(EPISODE_KEY) == data['metadata'][EPISODE_KEY]
  ]
  assert info.writer == 'external_arm' and info.length == 12


def test_hello_and_parameters_are_plain_data(gw):
  code, reply = _call(gw, H, encode_frame({'robot': 'arm'}))
  hello = protocol.read_reply(reply)
  assert code == OK and hello['config']['task'] == gw.cfg.task
  assert hello['spec']['observations']['shape'] == [5]
  assert hello['limits'] == {'max_episode_steps': MAX_STEPS, 'max_episode_bytes': 52428}
  code, reply = _call(gw, P, encode_frame({'have': None}))
  version, params = protocol.read_parameters_reply(reply, None)
  assert version == 7 and params['mlp/~/linear_0']['w'].shape == (5, 4)
  assert params['mlp/~/linear_0']['b'].dtype == np.float64
  code, reply = _call(gw, P, encode_frame({'have': 7}))
  assert protocol.read_parameters_reply(reply, 7) == (7, None)  # Unchanged: no bytes.
  assert len(reply) < 100


def test_the_gateway_listens_on_the_announced_host_only(gw):
  assert gw.address.startswith('127.0.0.1:')
  assert bind_address('localhost', 5) == '127.0.0.1:5'
  assert bind_address('0.0.0.0', 5) == '0.0.0.0:5'  # Only when announced so.
  assert bind_address('::1', 5) == '[::1]:5'
  # Another address of this machine, if it has one: nothing listens there.
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
    try:
      probe.connect(('10.255.255.255', 1))
      own = probe.getsockname()[0]
    except OSError:
      own = None
  if own and not own.startswith('127.'):
    port = int(gw.address.rpartition(':')[2])
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
      s.connect((own, port))


def test_a_call_stuck_on_the_learner_is_reported_at_the_stop(gw):
  """The node then ends its process rather than wait on gRPC's (non-daemon) worker threads."""
  entered, release = threading.Event(), threading.Event()

  class StuckLearner:
    def get_variables(self, names):
      entered.set()
      release.wait(30)
      return [{}, 1]

  worker = GatewayWorker(gw.cfg.to_dict(), StuckLearner(), 'localhost:1', 'localhost:0')
  address = worker.gateway.start('127.0.0.1:0')
  with grpc.insecure_channel(address) as channel:
    call = channel.unary_unary(protocol.method_path(P))
    future = call.future(encode_frame({}), timeout=30, metadata=protocol.auth_metadata(gw.token))
    try:
      assert entered.wait(10)
      assert not worker.gateway.stop(grace_s=0.1)  # The call still waits on the learner.
    finally:
      release.set()
    with pytest.raises(grpc.RpcError):
      future.result()
  assert worker.gateway.stop(grace_s=0.1)  # Once the learner answered, nothing runs.


def test_the_token_file_is_private_and_kept(gw, tmp_path, monkeypatch):
  path = gw.run.gateway_token
  assert stat.S_IMODE(path.stat().st_mode) == 0o600
  assert len(gw.token) >= 43 and protocol.ensure_token_file(path) == gw.token  # Kept.
  other = tmp_path / 'gateway.token'
  first = protocol.ensure_token_file(other)
  assert first != gw.token and stat.S_IMODE(other.stat().st_mode) == 0o600
  os.chmod(other, 0o644)  # Someone loosened it: made private again, same token.
  assert protocol.ensure_token_file(other) == first
  assert stat.S_IMODE(other.stat().st_mode) == 0o600
  other.write_text('short\n')
  with pytest.raises(ValueError, match='not a gateway token'):
    protocol.ensure_token_file(other)

  # A file system without hard links: made by a rename instead, as private.
  def no_links(*args):
    raise PermissionError(1, 'hard links not supported')

  monkeypatch.setattr(os, 'link', no_links)
  third = protocol.ensure_token_file(tmp_path / 'nolink.token')
  assert third == protocol.ensure_token_file(tmp_path / 'nolink.token')
  assert stat.S_IMODE((tmp_path / 'nolink.token').stat().st_mode) == 0o600
  assert sorted(p.name for p in tmp_path.iterdir()) == ['gateway.token', 'nolink.token']


def test_zz_tally(capsys):
  """The count the issue asks for: every bad-input case tried was refused."""
  with capsys.disabled():
    print(
      f'\n[gateway adversarial] {TALLY["tried"]} bad-input cases tried, '
      f'{TALLY["refused"]} refused with the store and replay unchanged'
    )
  assert TALLY['tried'] == TALLY['refused']
