"""Frames: plain data between robots and the program's gateway, never pickles.

A frame is a 4-byte big-endian header length, a UTF-8 JSON header, then the arrays' raw
bytes. The header is an object with exactly the keys

  'v': 1,
  'meta': a JSON object (the message's plain data),
  'arrays': a list of {'name', 'dtype', 'shape', 'offset', 'nbytes'}, one an array,

where `dtype` is one of DTYPES (little-endian numbers and bool only), `offset` counts from
the first byte after the header, and arrays follow each other in order, each at most 7
bytes of alignment padding after the previous one, the last ending the frame.

`decode_frame` checks the header and every declared size against the buffer and the
limits before it makes a single array, then makes each with `np.frombuffer` (a read-only
view of the buffer, no copy); anything else is refused with a FrameError naming the
field. JSON constants NaN and Infinity, and duplicate keys, are refused too.
"""

import dataclasses
import json
import math
import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

VERSION = 1
_LENGTH = struct.Struct('>I')
_ALIGN = 8
# The only dtypes a frame carries: plain numbers and bool, little-endian.
DTYPES = {
  name: np.dtype(code)
  for name, code in (
    ('bool', '|b1'),
    ('int8', '|i1'),
    ('int16', '<i2'),
    ('int32', '<i4'),
    ('int64', '<i8'),
    ('uint8', '|u1'),
    ('uint16', '<u2'),
    ('uint32', '<u4'),
    ('uint64', '<u8'),
    ('float16', '<f2'),
    ('float32', '<f4'),
    ('float64', '<f8'),
  )
}
_ARRAY_KEYS = {'name', 'dtype', 'shape', 'offset', 'nbytes'}


class FrameError(ValueError):
  """A buffer that is not a well-formed frame within the limits; the message names the field."""


@dataclasses.dataclass(frozen=True)
class FrameLimits:
  """The largest frame a receiver takes."""

  max_array_bytes: int = 64 << 20  # All arrays together.
  max_header_bytes: int = 1 << 20
  max_arrays: int = 4096
  max_ndim: int = 8
  max_json_depth: int = 16


def _dtype_name(dtype: np.dtype) -> Optional[str]:
  """The DTYPES name of `dtype` in either byte order (the frame carries it little-endian)."""
  for name, allowed in DTYPES.items():
    if dtype.kind == allowed.kind and dtype.itemsize == allowed.itemsize:
      return name
  return None


def encode_frame(meta: Mapping[str, Any], arrays: Mapping[str, Any] = ()) -> bytes:
  """`meta` (plain JSON, finite numbers) and named arrays of DTYPES as one frame.

  ValueError if `meta` is not plain JSON or an array's dtype is not in DTYPES.
  """
  entries: List[Dict[str, Any]] = []
  chunks: List[bytes] = []
  offset = 0
  for name, value in dict(arrays).items():
    array = np.asarray(value)
    dtype = _dtype_name(array.dtype)
    if dtype is None:
      raise ValueError(f'array {name!r}: dtype {array.dtype} is not one a frame carries')
    data = np.ascontiguousarray(array, DTYPES[dtype]).tobytes()
    padding = -offset % _ALIGN
    chunks.append(b'\0' * padding + data)
    offset += padding
    entries.append(
      {
        'name': str(name),
        'dtype': dtype,
        'shape': [int(d) for d in array.shape],
        'offset': offset,
        'nbytes': len(data),
      }
    )
    offset += len(data)
  header = json.dumps(
    {'v': VERSION, 'meta': dict(meta), 'arrays': entries}, allow_nan=False, separators=(',', ':')
  ).encode()
  # Spaces (valid JSON) so that the arrays start aligned in an aligned buffer.
  header += b' ' * (-(_LENGTH.size + len(header)) % _ALIGN)
  return b''.join([_LENGTH.pack(len(header)), header, *chunks])


def _refuse_constant(name: str) -> Any:
  raise FrameError(f'header: {name} is not plain JSON')


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
  result: Dict[str, Any] = {}
  for key, value in pairs:
    if key in result:
      raise FrameError(f'header: key {key!r:.60} appears twice')
    result[key] = value
  return result


def _depth(value: Any, limit: int) -> int:
  """How deeply `value` nests, counting no further than `limit` + 1."""
  stack = [(value, 1)]
  deepest = 0
  while stack:
    item, level = stack.pop()
    deepest = max(deepest, level)
    if deepest > limit:
      return deepest
    if isinstance(item, dict):
      stack.extend((v, level + 1) for v in item.values())
    elif isinstance(item, list):
      stack.extend((v, level + 1) for v in item)
  return deepest


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def parse_json(data: bytes, what: str) -> Any:
  """Strict JSON from bytes: UTF-8, no NaN or Infinity, no duplicate keys; FrameError else."""
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise FrameError(f'{what}: not UTF-8 ({e})') from None
  try:
    return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates)
  except FrameError as e:
    raise FrameError(str(e).replace('header', what, 1)) from None
  except (ValueError, RecursionError) as e:
    raise FrameError(f'{what}: not JSON ({e})') from None


def _check_entry(index: int, entry: Any, limits: FrameLimits) -> Tuple[str, np.dtype, tuple, int]:
  where = f'arrays[{index}]'
  if not isinstance(entry, dict):
    raise FrameError(f'{where}: expected an object, got {type(entry).__name__}')
  if set(entry) != _ARRAY_KEYS:
    raise FrameError(
      f'{where}: expected the keys {sorted(_ARRAY_KEYS)}, got {sorted(map(str, entry))}'
    )
  name = entry['name']
  if not isinstance(name, str) or not 0 < len(name) <= 256:
    raise FrameError(f'{where}.name: expected a string of 1-256 characters')
  where = f'array {name!r}'
  dtype_name = entry['dtype']
  if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
    raise FrameError(
      f'{where}: dtype {dtype_name!r:.40} is not one of {", ".join(DTYPES)} (frames carry plain '
      'numbers only)'
    )
  shape = entry['shape']
  if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
    raise FrameError(f'{where}: shape {shape!r:.80} is not a list of ints >= 0')
  if len(shape) > limits.max_ndim:
    raise FrameError(f'{where}: {len(shape)} dimensions, more than {limits.max_ndim}')
  offset, nbytes = entry['offset'], entry['nbytes']
  if not _is_int(offset) or offset < 0:
    raise FrameError(f'{where}: offset {offset!r:.40} is not an int >= 0')
  if not _is_int(nbytes) or nbytes < 0:
    raise FrameError(f'{where}: nbytes {nbytes!r:.40} is not an int >= 0')
  dtype = DTYPES[dtype_name]
  expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow.
  if expected != nbytes:
    raise FrameError(
      f'{where}: shape {tuple(shape)} of {dtype_name} is {expected} bytes, nbytes says {nbytes}'
    )
  return name, dtype, tuple(shape), offset


def decode_frame(
  buffer: bytes, limits: Optional[FrameLimits] = None
) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
  """(meta, arrays by name) of a frame; FrameError naming the field for anything else.

  The arrays are read-only views of `buffer`; copy one to change it.
  """
  limits = limits or FrameLimits()
  if not isinstance(buffer, (bytes, bytearray, memoryview)):
    raise FrameError(f'frame: expected bytes, got {type(buffer).__name__}')
  buffer = memoryview(buffer).cast('B')
  if len(buffer) < _LENGTH.size:
    raise FrameError(f'header length: the frame has {len(buffer)} bytes, fewer than 4')
  (header_length,) = _LENGTH.unpack_from(buffer)
  if header_length > limits.max_header_bytes:
    raise FrameError(
      f'header length: {header_length} bytes, more than the limit of {limits.max_header_bytes}'
    )
  if header_length > len(buffer) - _LENGTH.size:
    raise FrameError(
      f'header length: {header_length} bytes, but only {len(buffer) - _LENGTH.size} follow'
    )
  header = parse_json(bytes(buffer[_LENGTH.size : _LENGTH.size + header_length]), 'header')
  if not isinstance(header, dict):
    raise FrameError(f'header: expected a JSON object, got {type(header).__name__}')
  if set(header) != {'v', 'meta', 'arrays'}:
    raise FrameError(f"header: expected the keys ['arrays', 'meta', 'v'], got {sorted(header)}")
  if header['v'] != VERSION or not _is_int(header['v']):
    raise FrameError(f'header.v: version {header["v"]!r:.40}, this side reads {VERSION}')
  meta, entries = header['meta'], header['arrays']
  if not isinstance(meta, dict):
    raise FrameError(f'meta: expected a JSON object, got {type(meta).__name__}')
  if _depth(meta, limits.max_json_depth) > limits.max_json_depth:
    raise FrameError(f'meta: nested more than {limits.max_json_depth} deep')
  if not isinstance(entries, list):
    raise FrameError(f'arrays: expected a list, got {type(entries).__name__}')
  if len(entries) > limits.max_arrays:
    raise FrameError(f'arrays: {len(entries)} arrays, more than the limit of {limits.max_arrays}')
  payload = buffer[_LENGTH.size + header_length :]
  checked = []
  end, total = 0, 0
  for index, entry in enumerate(entries):
    name, dtype, shape, offset = _check_entry(index, entry, limits)
    if any(name == other for other, *_ in checked):
      raise FrameError(f'array {name!r}: named twice')
    nbytes = entry['nbytes']
    total += nbytes
    if total > limits.max_array_bytes:
      raise FrameError(
        f'array {name!r}: the arrays declare more than the limit of {limits.max_array_bytes} bytes'
      )
    if offset < end:
      raise FrameError(f'array {name!r}: offset {offset} overlaps the previous array (ends {end})')
    if offset - end >= _ALIGN:
      raise FrameError(f'array {name!r}: offset {offset} leaves a gap after byte {end}')
    if offset + nbytes > len(payload):
      raise FrameError(
        f'array {name!r}: bytes {offset}-{offset + nbytes} lie beyond the frame '
        f'({len(payload)} bytes of arrays)'
      )
    end = offset + nbytes
    checked.append((name, dtype, shape, offset))
  if end != len(payload):
    raise FrameError(f'frame: {len(payload) - end} bytes after the last array')
  arrays = {}
  for name, dtype, shape, offset in checked:
    count = math.prod(shape)
    if count == 0:  # frombuffer refuses an offset at the very end.
      arrays[name] = np.empty(shape, dtype)
    else:
      arrays[name] = np.frombuffer(payload, dtype, count=count, offset=offset).reshape(shape)
      if dtype.kind == 'b' and arrays[name].view(np.uint8).max() > 1:
        raise FrameError(f'array {name!r}: bool bytes other than 0 and 1')
    arrays[name].flags.writeable = False
  return meta, arrays
