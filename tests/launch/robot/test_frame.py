"""Frames, the gateway's plain-data wire format: every whitelisted dtype round-trips, and every
malformed frame is refused, naming the field, before any array is made."""

import json
import pickle
import struct
import time

import numpy as np
import pytest

from launch.robot import protocol
from launch.robot.frame import DTYPES, FrameError, FrameLimits, decode_frame, encode_frame


def _frame(header, payload: bytes = b'') -> bytes:
  """A hand-made frame: what a peer that ignores the encoder may send."""
  text = header if isinstance(header, bytes) else json.dumps(header).encode()
  return struct.pack('>I', len(text)) + text + payload


def _entry(name='x', dtype='float32', shape=(2,), offset=0, nbytes=8):
  return {'name': name, 'dtype': dtype, 'shape': list(shape), 'offset': offset, 'nbytes': nbytes}


def _header(*entries, meta=None):
  return {'v': 1, 'meta': meta or {}, 'arrays': list(entries)}


@pytest.mark.parametrize('name', sorted(DTYPES))
def test_every_whitelisted_dtype_round_trips(name):
  rng = np.random.default_rng(0)
  dtype = DTYPES[name]
  if dtype.kind == 'b':
    values = rng.integers(0, 2, size=(3, 4)).astype(bool)
  elif dtype.kind == 'f':
    values = rng.standard_normal((3, 4)).astype(dtype)
  else:
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, size=(3, 4), dtype=dtype, endpoint=True)
  # A big-endian input travels little-endian and comes back equal.
  swapped = values.astype(values.dtype.newbyteorder('>'))
  meta, arrays = decode_frame(
    encode_frame({'k': [1, 'two', None]}, {'a': values, 'b': swapped[:, ::2], 'z': values[:0]})
  )
  assert meta == {'k': [1, 'two', None]}
  assert arrays['a'].dtype == dtype and arrays['a'].shape == (3, 4)
  np.testing.assert_array_equal(arrays['a'], values)
  np.testing.assert_array_equal(arrays['b'], values[:, ::2])
  assert arrays['z'].shape == (0, 4)
  assert not arrays['a'].flags.writeable  # Views of the received bytes; copy to change.
  assert arrays['a'].ctypes.data % dtype.itemsize == 0  # Aligned.


def test_parameters_round_trip_as_module_name_paths():
  params = {
    'mlp/~/linear_0': {'w': np.ones((3, 2), np.float32), 'b': np.zeros(2, np.float32)},
    'head': {'scale': np.float32(2.0)},
  }
  frame = protocol.parameters_reply(17, params)
  _, arrays = decode_frame(frame, protocol.PARAMETER_LIMITS)
  assert sorted(arrays) == ['head/scale', 'mlp/~/linear_0/b', 'mlp/~/linear_0/w']
  version, again = protocol.read_parameters_reply(frame, have=None)
  assert version == 17 and again.keys() == params.keys()
  np.testing.assert_array_equal(again['mlp/~/linear_0']['w'], params['mlp/~/linear_0']['w'])
  assert again['head']['scale'].shape == ()
  assert protocol.read_parameters_reply(protocol.parameters_reply(0, {}), None) == (0, {})


class _Marker:
  def __reduce__(self):
    return (print, ('unpickled',))


MALFORMED = [
  # (what, frame, the start of the FrameError message)
  ('empty', b'', 'header length: the frame has 0 bytes, fewer than 4'),
  ('header length past the end', struct.pack('>I', 100) + b'{}', 'header length: 100 bytes, but'),
  ('header length over the limit', struct.pack('>I', 2 << 20), 'header length: 2097152 bytes'),
  ('header not UTF-8', _frame(b'\xff\xfe'), 'header: not UTF-8'),
  ('header not JSON', _frame(b'{"v": 1,'), 'header: not JSON'),
  ('a pickle as the header', _frame(pickle.dumps(_Marker())), 'header: not'),
  ('a pickle as the whole frame', pickle.dumps({'observations': _Marker()}), 'header length'),
  ('NaN in the header', _frame(b'{"v": 1, "meta": {"x": NaN}, "arrays": []}'), 'header: NaN'),
  (
    'Infinity in the header',
    _frame(b'{"v": 1, "meta": {"x": -Infinity}, "arrays": []}'),
    'header: -Infinity',
  ),
  ('a duplicate key', _frame(b'{"v": 1, "v": 1, "meta": {}, "arrays": []}'), "header: key 'v'"),
  ('header a list', _frame([1, 2]), 'header: expected a JSON object, got list'),
  ('a key missing', _frame({'v': 1, 'meta': {}}), "header: expected the keys ['arrays'"),
  ('a key too many', _frame({**_header(), 'code': 'x'}), "header: expected the keys ['arrays'"),
  ('another version', _frame({**_header(), 'v': 2}), 'header.v: version 2'),
  ('meta a string', _frame({**_header(), 'meta': 'x'}), 'meta: expected a JSON object, got str'),
  (
    'meta too deep',
    _frame(_header(meta={'a': [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]})),
    'meta: nested',
  ),
  ('arrays a dict', _frame({**_header(), 'arrays': {}}), 'arrays: expected a list, got dict'),
  ('an entry a string', _frame(_header('x')), 'arrays[0]: expected an object, got str'),
  ('an entry without nbytes', _frame(_header({'name': 'x'})), 'arrays[0]: expected the keys'),
  ('a name not a string', _frame(_header(_entry(name=5))), 'arrays[0].name: expected a string'),
  ('object dtype', _frame(_header(_entry(dtype='O'))), "array 'x': dtype 'O' is not one of"),
  ('object dtype by name', _frame(_header(_entry(dtype='object'))), "array 'x': dtype 'object'"),
  ('complex dtype', _frame(_header(_entry(dtype='complex64'))), "array 'x': dtype 'complex64'"),
  ('a pickled dtype', _frame(_header(_entry(dtype=['pickle']))), "array 'x': dtype ['pickle']"),
  ('a negative dimension', _frame(_header(_entry(shape=(-1,)))), "array 'x': shape [-1] is not"),
  ('a float dimension', _frame(_header(_entry(shape=(2.0,)))), "array 'x': shape [2.0] is not"),
  ('a bool dimension', _frame(_header(_entry(shape=(True,)))), "array 'x': shape [True] is not"),
  ('too many dimensions', _frame(_header(_entry(shape=(1,) * 9))), "array 'x': 9 dimensions"),
  (
    'shape and nbytes disagree',
    _frame(_header(_entry(shape=(3,), nbytes=8)), b'\0' * 8),
    "array 'x': shape (3,) of float32 is 12 bytes, nbytes says 8",
  ),
  ('a negative offset', _frame(_header(_entry(offset=-8))), "array 'x': offset -8 is not"),
  (
    'offsets overlapping',
    _frame(_header(_entry(), _entry(name='y', offset=4)), b'\0' * 12),
    "array 'y': offset 4 overlaps the previous array (ends 8)",
  ),
  (
    'an offset beyond the frame',
    _frame(_header(_entry(offset=0)), b'\0' * 4),
    "array 'x': bytes 0-8 lie beyond the frame (4 bytes of arrays)",
  ),
  (
    'a gap between arrays',
    _frame(_header(_entry(offset=64)), b'\0' * 72),
    "array 'x': offset 64 leaves a gap after byte 0",
  ),
  ('bytes after the arrays', _frame(_header(_entry()), b'\0' * 12), 'frame: 4 bytes after'),
  (
    'the same name twice',
    _frame(_header(_entry(), _entry(offset=8)), b'\0' * 16),
    "array 'x': named twice",
  ),
  (
    'bool bytes not 0 or 1',
    _frame(_header(_entry(dtype='bool', shape=(2,), nbytes=2)), b'\x01\x07'),
    "array 'x': bool bytes other than 0 and 1",
  ),
  (
    'a truncated frame',
    encode_frame({}, {'x': np.zeros(10, np.float32)})[:-3],
    "array 'x': bytes 0-40 lie beyond the frame (37 bytes of arrays)",
  ),
]


@pytest.mark.parametrize('what,frame,message', MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_frame_is_refused_naming_the_field(what, frame, message, capsys):
  del what
  with pytest.raises(FrameError) as error:
    decode_frame(frame)
  assert str(error.value).startswith(message), str(error.value)
  assert 'unpickled' not in capsys.readouterr().out


def test_a_huge_declared_size_is_refused_before_anything_is_allocated():
  # 2**60 float64s declared, 8 bytes sent: refused at once on the declared size.
  huge = _entry(shape=(2**60,), nbytes=2**63)
  start = time.monotonic()
  with pytest.raises(FrameError, match=r"array 'x': the arrays declare more than the limit"):
    decode_frame(_frame(_header({**huge, 'dtype': 'float64'}), b'\0' * 8))
  assert time.monotonic() - start < 0.1
  limits = FrameLimits(max_array_bytes=100, max_arrays=2)
  big = encode_frame({}, {'x': np.zeros(26, np.float32)})
  with pytest.raises(FrameError, match='more than the limit of 100 bytes'):
    decode_frame(big, limits)
  many = encode_frame({}, {str(i): np.zeros(1, np.int8) for i in range(3)})
  with pytest.raises(FrameError, match='arrays: 3 arrays, more than the limit of 2'):
    decode_frame(many, limits)


def test_the_encoder_refuses_what_a_frame_cannot_carry():
  with pytest.raises(ValueError, match="array 'x': dtype object"):
    encode_frame({}, {'x': np.array([{'a': 1}], dtype=object)})
  with pytest.raises(ValueError, match='Out of range float values are not JSON compliant'):
    encode_frame({'x': float('nan')})
  with pytest.raises(TypeError):
    encode_frame({'x': _Marker()})


def test_a_parameters_tree_must_name_each_array_once():
  frame = encode_frame(
    {'status': 'ok', 'learner_steps': 1, 'tree': {'a': 'x', 'b': 'x'}},
    {'x': np.zeros(1, np.float32)},
  )
  with pytest.raises(FrameError, match="tree/b: array 'x' is named twice"):
    protocol.read_parameters_reply(frame, None)
  frame = encode_frame(
    {'status': 'ok', 'learner_steps': 1, 'tree': {'a': 'y'}}, {'x': np.zeros(1, np.float32)}
  )
  with pytest.raises(FrameError, match="tree/a: 'y' names no array"):
    protocol.read_parameters_reply(frame, None)
  frame = encode_frame({'status': 'ok', 'learner_steps': -1, 'tree': {}})
  with pytest.raises(FrameError, match='learner_steps: -1 is not an int >= 0'):
    protocol.read_parameters_reply(frame, None)
