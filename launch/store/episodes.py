"""Episodes as the store keeps them, and the durable append-only episode store.

A store is a directory; each writer name owns three kinds of files in it::

    <name>.lock          flock held by the live writer of that name (holds its pid)
    <name>.index         a first line b"#CIE1 index <random hex>\\n" naming this
                         version of the file, then one line per stored
                         episode: b"<crc32 hex> <json>\\n"
    <name>.<k>.seg       segments (k = 000000, 000001, ...): records back to back

A record is one whole episode::

    prefix   struct '<4sIQ': magic b'CIE1', header length H, payload length P
    crcs     struct '<II'  : crc32 of the prefix, crc32 of header + payload
    header   H bytes of JSON: id, writer, seq, time, length, return, metadata,
             and each array's dtype (numpy's dtype.str, byte order included),
             shape and byte offset in the payload; space-padded so the
             payload starts 16-byte aligned within the record
    payload  P bytes: observations, actions, rewards, discounts, raw C-order
             bytes each, 16-byte aligned (bit-exact, no pickle; a reader
             gets writable arrays without copying)

Durability: `EpisodeWriter.append` writes the record and fsyncs the segment,
then writes the index line and fsyncs the index, and only then returns. A
reader sees an episode only through a complete, checksummed index line whose
record is complete (and, by default, checksummed too), so a crash at any point
leaves each episode either whole or invisible. A writer re-opening its name
after a crash indexes a record that was complete but not yet indexed, cuts a
torn record off its segment, and rewrites a damaged index (write, fsync,
rename), never editing a live index in place.
"""

import bisect
import dataclasses
import fcntl
import json
import math
import os
import pathlib
import re
import secrets
import struct
import time
import zlib
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from agents.common.files import fsync_dir, write_all
from agents.common.logs import get_logger

log = get_logger('store')

PathLike = Union[str, os.PathLike]

_ARRAY_FIELDS = ('observations', 'actions', 'rewards', 'discounts')
_MAGIC = b'CIE1'
_PREFIX = struct.Struct('<4sIQ')
_CRCS = struct.Struct('<II')
_HEAD = _PREFIX.size + _CRCS.size
_ALIGN = 16
# numpy kinds that a dtype string round-trips exactly: bool, integers, floats,
# complex, bytes, unicode, datetimes and timedeltas.
_DTYPE_KINDS = 'biufcSUmM'
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')
_INDEX_SUFFIX = '.index'
_INDEX_HEAD_LEN = len(b'#CIE1 index ') + 16 + 1
_SEGMENT_DIGITS = 6
DEFAULT_MAX_SEGMENT_BYTES = 1 << 30


@dataclasses.dataclass
class Episode:
  """One complete episode of T steps.

  observations[t] is what the agent saw before actions[t]; observations[T] is
  the final observation. rewards[t] and discounts[t] follow actions[t]
  (dm_env semantics: discount 0 marks a terminal step, 1 a time-limit cut).
  metadata is JSON-serialisable: source (actor / robot name), policy_version
  (learner step of the parameters that acted), seed, task, ...
  """
  observations: np.ndarray  # [T + 1, ...]
  actions: np.ndarray  # [T, ...]
  rewards: np.ndarray  # [T]
  discounts: np.ndarray  # [T]
  metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def length(self) -> int:
    return int(self.actions.shape[0])

  @property
  def episode_return(self) -> float:
    return float(np.sum(self.rewards, dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
  """What the index says about one stored episode (no arrays)."""
  episode_id: str
  writer: str
  length: int
  episode_return: float
  metadata: Dict[str, Any]
  time: float  # Unix time the writer appended it.
  segment: str  # Segment file name, relative to the store directory.
  offset: int  # Byte offset of the record in the segment.
  size: int  # Byte size of the record.


class StoreError(Exception):
  """The store can't do what was asked (see subclasses)."""


class WriterBusyError(StoreError):
  """Another live writer (in this or another process) holds the name."""


class CorruptRecordError(StoreError):
  """A record failed its integrity check (truncated or altered bytes)."""


# ----------------------------------------------------------------------------
# Validation and encoding.


def _first_bad_step(values: np.ndarray) -> Optional[int]:
  """Index along axis 0 of the first non-finite entry, or None."""
  if values.dtype.kind not in 'fc':
    return None
  bad = ~np.isfinite(values)
  if not bad.any():
    return None
  return int(np.argwhere(bad)[0][0])


def _checked_arrays(episode: Episode) -> Dict[str, np.ndarray]:
  """The episode's arrays as numpy arrays; ValueError if it can't be stored."""
  arrays = {}
  for field in _ARRAY_FIELDS:
    value = getattr(episode, field)
    try:
      value = np.asarray(value)
    except (TypeError, ValueError) as e:  # Ragged lists and the like.
      raise ValueError(f'{field}: not convertible to an array ({e})') from e
    if value.dtype.kind not in _DTYPE_KINDS:
      raise ValueError(f'{field}: dtype {value.dtype} is not storable; the store keeps '
                       'plain bool, numeric, string and datetime arrays')
    if value.ndim == 0:
      raise ValueError(f'{field}: expected an array with a time axis, got a scalar')
    arrays[field] = value
  steps = arrays['actions'].shape[0]
  if steps < 1:
    raise ValueError('actions: an episode needs at least one step, got 0')
  if arrays['observations'].shape[0] != steps + 1:
    raise ValueError(f'observations: expected {steps + 1} (T + 1) along axis 0 for '
                     f'T={steps} actions, got shape {arrays["observations"].shape}')
  for field in ('rewards', 'discounts'):
    value = arrays[field]
    if value.shape != (steps,):
      raise ValueError(f'{field}: expected shape ({steps},) (one per action), got {value.shape}')
    if value.dtype.kind != 'f':
      raise ValueError(f'{field}: expected a floating dtype, got {value.dtype}')
  for field in _ARRAY_FIELDS:
    step = _first_bad_step(arrays[field])
    if step is not None:
      raise ValueError(f'{field}: non-finite value at step {step}')
  return arrays


def _checked_metadata(metadata: Any) -> Dict[str, Any]:
  if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
    raise ValueError('metadata: expected a dict with string keys')
  try:
    # The round trip makes the stored copy exactly what a reader gets back
    # (tuples become lists, and so on).
    return json.loads(json.dumps(metadata, allow_nan=False))
  except (TypeError, ValueError) as e:
    raise ValueError(f'metadata: not JSON-serialisable ({e})') from e


def validate_episode(episode: Episode) -> None:
  """Raises ValueError (naming the field, and the step for bad values) if the
  store would refuse `episode`."""
  _checked_arrays(episode)
  _checked_metadata(episode.metadata)


def _padding(size: int) -> int:
  return -size % _ALIGN


def _encode_record(header: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> bytes:
  blobs, layout, offset = [], [], 0
  for field in _ARRAY_FIELDS:
    value = arrays[field]
    blob = np.ascontiguousarray(value).tobytes()
    layout.append({'dtype': value.dtype.str, 'shape': list(value.shape), 'offset': offset})
    blobs += [blob, bytes(_padding(len(blob)))]
    offset += len(blob) + _padding(len(blob))
  header_bytes = json.dumps(dict(header, arrays=layout), allow_nan=False,
                            separators=(',', ':')).encode()
  header_bytes += b' ' * _padding(_HEAD + len(header_bytes))
  payload = b''.join(blobs)
  prefix = _PREFIX.pack(_MAGIC, len(header_bytes), len(payload))
  body_crc = zlib.crc32(payload, zlib.crc32(header_bytes))
  return b''.join([prefix, _CRCS.pack(zlib.crc32(prefix), body_crc), header_bytes, payload])


def _record_size(head: bytes) -> Optional[int]:
  """Total size of the record whose first _HEAD bytes are `head`, or None if
  they are not a valid record start."""
  if len(head) < _HEAD:
    return None
  magic, header_len, payload_len = _PREFIX.unpack_from(head)
  prefix_crc, _ = _CRCS.unpack_from(head, _PREFIX.size)
  if magic != _MAGIC or zlib.crc32(head[:_PREFIX.size]) != prefix_crc:
    return None
  return _HEAD + header_len + payload_len


def _check_record(data: bytearray) -> Tuple[Dict[str, Any], memoryview]:
  """(header, payload) of a whole record; CorruptRecordError if it is damaged."""
  size = _record_size(bytes(data[:_HEAD]))
  if size is None:
    raise CorruptRecordError('bad record prefix')
  if size != len(data):
    raise CorruptRecordError(f'record is {len(data)} bytes, its prefix says {size}')
  header_len = _PREFIX.unpack_from(data)[1]
  _, body_crc = _CRCS.unpack_from(data, _PREFIX.size)
  body = memoryview(data)[_HEAD:]
  if zlib.crc32(body) != body_crc:
    raise CorruptRecordError('record checksum mismatch')
  try:
    header = json.loads(bytes(body[:header_len]))
  except ValueError as e:
    raise CorruptRecordError(f'unreadable record header ({e})') from e
  return header, body[header_len:]


def _decode_arrays(header: Dict[str, Any], payload: memoryview) -> Dict[str, np.ndarray]:
  """The arrays of a checked record, as views of its (writable) buffer."""
  arrays = {}
  for field, layout in zip(_ARRAY_FIELDS, header['arrays']):
    dtype = np.dtype(layout['dtype'])
    shape = tuple(layout['shape'])
    count = int(np.prod(shape, dtype=np.int64))
    arrays[field] = np.frombuffer(payload, dtype, count, layout['offset']).reshape(shape)
  return arrays


# ----------------------------------------------------------------------------
# The index.


def _index_head() -> bytes:
  """A fresh first line for an index file.

  Readers compare it to tell a rewritten index from the one they were
  reading, even if the filesystem gives the new file the old one's inode.
  """
  return b'#CIE1 index %s\n' % secrets.token_hex(8).encode()


def _index_line(entry: Dict[str, Any]) -> bytes:
  text = json.dumps(entry, allow_nan=False, separators=(',', ':')).encode()
  return b'%08x %s\n' % (zlib.crc32(text), text)


def _parse_index_line(line: bytes) -> Optional[Dict[str, Any]]:
  """The entry of one index line (without its newline), or None if damaged."""
  crc, sep, text = line.partition(b' ')
  if not sep or len(crc) != 8:
    return None
  try:
    if int(crc, 16) != zlib.crc32(text):
      return None
    entry = json.loads(text)
  except ValueError:
    return None
  needed = ('id', 'writer', 'seq', 'segment', 'offset', 'size', 'length', 'return',
            'metadata', 'time')
  if not isinstance(entry, dict) or any(k not in entry for k in needed):
    return None
  return entry


def _index_entry(header: Dict[str, Any], segment: str, offset: int, size: int) -> Dict[str, Any]:
  entry = {k: header[k] for k in ('id', 'writer', 'seq', 'time', 'length', 'return', 'metadata')}
  entry.update(segment=segment, offset=offset, size=size)
  return entry


def _info(entry: Dict[str, Any]) -> EpisodeInfo:
  return EpisodeInfo(episode_id=entry['id'], writer=entry['writer'], length=int(entry['length']),
                     episode_return=float(entry['return']), metadata=entry['metadata'],
                     time=float(entry['time']), segment=entry['segment'],
                     offset=int(entry['offset']), size=int(entry['size']))


def _segment_name(writer: str, number: int) -> str:
  return f'{writer}.{number:0{_SEGMENT_DIGITS}d}.seg'


def _segment_re(writer: str) -> 're.Pattern[str]':
  return re.compile(rf'^{re.escape(writer)}\.(\d{{{_SEGMENT_DIGITS},}})\.seg$')


# ----------------------------------------------------------------------------
# Small file helpers.


def _pread_all(fd: int, size: int, offset: int) -> bytes:
  parts = []
  while size > 0:
    chunk = os.pread(fd, size, offset)
    if not chunk:
      break
    parts.append(chunk)
    size -= len(chunk)
    offset += len(chunk)
  return b''.join(parts)


def _sync(fd: int) -> None:
  # fdatasync also flushes the file size, all a reader needs of appended data.
  getattr(os, 'fdatasync', os.fsync)(fd)


def _read_index_file(path: pathlib.Path) -> Tuple[List[Dict[str, Any]], bool]:
  """All valid entries of an index file, and whether every byte was valid."""
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    return [], True
  complete = data.rfind(b'\n') + 1
  clean = complete == len(data)
  entries = []
  for line in data[:complete].split(b'\n')[:-1]:
    if line.startswith(b'#'):
      continue
    entry = _parse_index_line(line)
    if entry is None:
      clean = False
    else:
      entries.append(entry)
  return entries, clean


# ----------------------------------------------------------------------------
# Writing.


class EpisodeWriter:
  """Appends whole episodes to one writer name's segments; one per name at a time.

  Get one from `EpisodeStore.writer`. Not thread-safe. If an append fails
  part-way (disk full, interrupt), the writer closes itself; open a new one,
  which repairs the files as after a crash.
  """

  def __init__(self, directory: PathLike, name: str,
               max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES):
    if not isinstance(name, str) or not _NAME_RE.match(name):
      raise ValueError(f'writer name {name!r}: use 1-128 letters, digits, "_", "-" or ".", '
                       'starting with a letter or digit')
    self._dir = pathlib.Path(directory)
    self._name = name
    self._max_segment_bytes = int(max_segment_bytes)
    self._index_path = self._dir / f'{name}{_INDEX_SUFFIX}'
    self._seg_fd = -1
    self._index_fd = -1
    self._lock_fd = self._lock()
    try:
      self._recover()
    except BaseException:
      self.close()
      raise

  @property
  def name(self) -> str:
    return self._name

  @property
  def closed(self) -> bool:
    return self._lock_fd < 0

  def _lock(self) -> int:
    path = self._dir / f'{self._name}.lock'
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _pread_all(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      raise WriterBusyError(
          f'episode writer {self._name!r} is already open in {self._dir} (pid {holder}); '
          'give each actor or robot its own writer name') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    return fd

  def _segments(self) -> List[int]:
    pattern = _segment_re(self._name)
    numbers = []
    for entry in os.scandir(self._dir):
      match = pattern.match(entry.name)
      if match:
        numbers.append(int(match.group(1)))
    return sorted(numbers)

  def _recover(self) -> None:
    """Brings this name's files to a state where every record is indexed and
    the current segment ends with a whole record (what a crash or a failed
    append may have left otherwise)."""
    entries, clean = _read_index_file(self._index_path)
    numbers = self._segments()
    sizes = {_segment_name(self._name, n): os.path.getsize(self._dir / _segment_name(self._name, n))
             for n in numbers}
    # Ids are never reused, even those of entries dropped below: a reader may
    # have seen them already.
    next_seq = max((int(e['seq']) + 1 for e in entries), default=0)
    kept = [e for e in entries if e['writer'] == self._name and e['segment'] in sizes
            and e['offset'] + e['size'] <= sizes[e['segment']]]
    if len(kept) != len(entries):
      log.warning('store %s: %d index entr(ies) of writer %r point outside its segments '
                  '(a segment truncated or removed by hand?); dropped', self._dir,
                  len(entries) - len(kept), self._name)
      clean = False
    current = numbers[-1] if numbers else 0
    recovered = []
    for number in numbers:
      segment = _segment_name(self._name, number)
      known = {e['offset']: e['size'] for e in kept if e['segment'] == segment}
      found, end = self._scan(segment, known, sizes[segment])
      recovered.extend(found)
      if number == current and end < sizes[segment]:
        log.warning('store %s: cutting a torn record (%d bytes) off the end of %s', self._dir,
                    sizes[segment] - end, segment)
        fd = os.open(self._dir / segment, os.O_WRONLY)
        try:
          os.ftruncate(fd, end)
          os.fsync(fd)
        finally:
          os.close(fd)
    if recovered:
      log.warning('store %s: indexed %d whole episode(s) of writer %r that had no (intact) '
                  'index line', self._dir, len(recovered), self._name)
      next_seq = max([next_seq] + [int(e['seq']) + 1 for e in recovered])
    if not clean:
      # Never edit a live index in place (a reader may be part-way through
      # it): write the repaired one aside and rename it over; readers notice
      # the new inode and rescan.
      tmp = self._dir / f'{self._name}{_INDEX_SUFFIX}.tmp'
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      try:
        write_all(fd, _index_head() + b''.join(_index_line(e) for e in kept + recovered))
        os.fsync(fd)
      finally:
        os.close(fd)
      os.replace(tmp, self._index_path)
      fsync_dir(self._dir)
    created = not self._index_path.exists()
    self._index_fd = os.open(self._index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if os.fstat(self._index_fd).st_size == 0:
      write_all(self._index_fd, _index_head())
      os.fsync(self._index_fd)
    if recovered and clean:
      write_all(self._index_fd, b''.join(_index_line(e) for e in recovered))
      os.fsync(self._index_fd)
    self._next_seq = next_seq
    self._open_segment(current)
    if created:
      fsync_dir(self._dir)

  def _scan(self, segment: str, known: Dict[int, int], size: int
            ) -> Tuple[List[Dict[str, Any]], int]:
    """Finds whole records in `segment` that the index lacks.

    Walks the segment record by record, jumping over the indexed ones
    (`known`: offset -> size) without reading them, so a clean segment costs
    no I/O. Returns the index entries of the records found and where the last
    whole record ends.
    """
    found = []
    offsets = sorted(known)
    position = 0
    fd = os.open(self._dir / segment, os.O_RDONLY)
    try:
      while position < size:
        if position in known:
          position += known[position]
          continue
        later = offsets[bisect.bisect_right(offsets, position):]
        limit = later[0] if later else size
        entry = self._record_at(fd, segment, position, limit)
        if entry is not None:
          found.append(entry)
          position += entry['size']
        elif later:
          log.warning('store %s: %d unreadable bytes at %s:%d skipped', self._dir,
                      limit - position, segment, position)
          position = limit
        else:
          break  # A torn tail.
    finally:
      os.close(fd)
    return found, position

  def _record_at(self, fd: int, segment: str, position: int, limit: int
                 ) -> Optional[Dict[str, Any]]:
    """The index entry of a whole record of this writer at `position` that
    ends by `limit`, or None."""
    record_size = _record_size(_pread_all(fd, _HEAD, position))
    if record_size is None or position + record_size > limit:
      return None
    try:
      header, _ = _check_record(bytearray(_pread_all(fd, record_size, position)))
    except CorruptRecordError:
      return None
    if header.get('writer') != self._name:
      return None
    try:
      return _index_entry(header, segment, position, record_size)
    except KeyError:
      return None

  def _open_segment(self, number: int) -> None:
    if self._seg_fd >= 0:
      os.close(self._seg_fd)
      self._seg_fd = -1
    self._segment_number = number
    self._segment = _segment_name(self._name, number)
    path = self._dir / self._segment
    existed = path.exists()
    self._seg_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    self._segment_size = os.fstat(self._seg_fd).st_size
    if not existed:
      fsync_dir(self._dir)

  def append(self, episode: Episode) -> str:
    """Stores `episode` whole and durably (fsynced) and returns its id.

    Raises ValueError, storing nothing, if the episode is malformed (see
    `validate_episode`).
    """
    if self.closed:
      raise StoreError(f'episode writer {self._name!r} is closed')
    arrays = _checked_arrays(episode)
    metadata = _checked_metadata(episode.metadata)
    episode_return = float(np.sum(arrays['rewards'], dtype=np.float64))
    if not math.isfinite(episode_return):
      raise ValueError('rewards: the episode return overflows to a non-finite value')
    seq = self._next_seq
    header = {'id': f'{self._name}-{seq:08d}', 'writer': self._name, 'seq': seq,
              'time': time.time(), 'length': int(arrays['actions'].shape[0]),
              'return': episode_return, 'metadata': metadata}
    record = _encode_record(header, arrays)
    try:
      if self._segment_size > 0 and self._segment_size + len(record) > self._max_segment_bytes:
        self._open_segment(self._segment_number + 1)
      offset = self._segment_size
      # Record first, index second: an index line never points at bytes that
      # a crash could still lose.
      write_all(self._seg_fd, record)
      _sync(self._seg_fd)
      self._segment_size += len(record)
      write_all(self._index_fd, _index_line(_index_entry(header, self._segment, offset,
                                                          len(record))))
      _sync(self._index_fd)
    except BaseException:
      # The files may now end part-way through a record or a line: stop
      # writing, and let the next writer of this name repair them.
      self.close()
      raise
    self._next_seq = seq + 1
    return header['id']

  def close(self) -> None:
    """Closes the files and releases the name (idempotent)."""
    for attr in ('_seg_fd', '_index_fd', '_lock_fd'):
      fd = getattr(self, attr, -1)
      if fd >= 0:
        setattr(self, attr, -1)
        try:
          os.close(fd)
        except OSError:
          pass

  def __enter__(self) -> 'EpisodeWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __del__(self) -> None:
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass  # Interpreter shutdown may have torn down `os` already.


# ----------------------------------------------------------------------------
# Reading.


@dataclasses.dataclass
class _Cursor:
  inode: int
  head: bytes  # The index file's first line, as far as it was written.
  offset: int  # Bytes of the index file already taken in.


class EpisodeStore:
  """The episode store rooted at `directory` (created if missing).

  Reading: `refresh()` takes in what writers (any process) appended since the
  last look, reading only the new tail of each index and the new records; the
  first read-side call refreshes by itself. With `verify` (the default) each
  new record is checksummed when taken in, so every visible episode reads
  back intact; a damaged one is skipped with a warning. `verify=False` reads
  only the index (cheap, e.g. to count episodes); damage then shows up as
  CorruptRecordError from `read`. Not thread-safe.
  """

  def __init__(self, directory: PathLike, *, verify: bool = True):
    self._dir = pathlib.Path(directory)
    self._dir.mkdir(parents=True, exist_ok=True)
    self._verify = verify
    self._infos: List[EpisodeInfo] = []
    self._by_id: Dict[str, int] = {}
    self._cursors: Dict[str, _Cursor] = {}
    self._num_steps = 0
    self._loaded = False

  @property
  def directory(self) -> pathlib.Path:
    return self._dir

  def writer(self, name: str, *, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES
             ) -> EpisodeWriter:
    """The writer for `name`; WriterBusyError if a live writer holds it.

    Re-opening a name (after a restart or a crash) continues its segments.
    """
    return EpisodeWriter(self._dir, name, max_segment_bytes=max_segment_bytes)

  def refresh(self) -> int:
    """Takes in episodes appended since the last look; returns how many."""
    self._loaded = True
    new = 0
    for name in sorted(os.listdir(self._dir)):
      if name.endswith(_INDEX_SUFFIX) and _NAME_RE.match(name[:-len(_INDEX_SUFFIX)]):
        new += self._refresh_index(name)
    return new

  def _refresh_index(self, index_name: str) -> int:
    try:
      fd = os.open(self._dir / index_name, os.O_RDONLY)
    except FileNotFoundError:
      return 0
    try:
      stat = os.fstat(fd)
      head = _pread_all(fd, _INDEX_HEAD_LEN, 0)
      cursor = self._cursors.get(index_name)
      if (cursor is None or cursor.inode != stat.st_ino or cursor.head != head
          or stat.st_size < cursor.offset):
        # New, or rewritten by a recovering writer: read it all again; the
        # episodes already taken in are recognised by id.
        cursor = self._cursors[index_name] = _Cursor(stat.st_ino, head, 0)
      if stat.st_size == cursor.offset:
        return 0
      data = _pread_all(fd, stat.st_size - cursor.offset, cursor.offset)
    finally:
      os.close(fd)
    writer = index_name[:-len(_INDEX_SUFFIX)]
    segment_pattern = _segment_re(writer)
    segment_sizes: Dict[str, int] = {}
    new = 0
    position = 0
    # Take in bytes only up to the last good line: damaged lines at the very
    # end are looked at again next time rather than written off.
    taken = 0
    skipped = 0
    for line in data[:data.rfind(b'\n') + 1].split(b'\n')[:-1]:
      position += len(line) + 1
      if line.startswith(b'#'):
        if not skipped:
          taken = position
        continue
      entry = _parse_index_line(line)
      if entry is None:
        skipped += 1
        continue
      if skipped:
        log.warning('store %s: skipped %d damaged line(s) in %s', self._dir, skipped, index_name)
        skipped = 0
      taken = position
      if entry['id'] in self._by_id:
        continue
      if entry['writer'] != writer or not segment_pattern.match(str(entry['segment'])):
        log.warning('store %s: %s names a foreign writer or segment; entry %r skipped',
                    self._dir, index_name, entry['id'])
        continue
      if self._admit(entry, segment_sizes):
        new += 1
    cursor.offset += taken
    return new

  def _admit(self, entry: Dict[str, Any], segment_sizes: Dict[str, int]) -> bool:
    """Adds an index entry if its record is there (and intact, with verify)."""
    segment = entry['segment']
    if segment not in segment_sizes:
      try:
        segment_sizes[segment] = os.path.getsize(self._dir / segment)
      except FileNotFoundError:
        segment_sizes[segment] = -1
    if entry['offset'] + entry['size'] > segment_sizes[segment]:
      log.warning('store %s: episode %s is missing from %s (segment truncated?); skipped',
                  self._dir, entry['id'], segment)
      return False
    info = _info(entry)
    if self._verify:
      try:
        self._read_record(info)
      except CorruptRecordError as e:
        log.warning('store %s: episode %s is damaged (%s); skipped', self._dir, entry['id'], e)
        return False
    self._by_id[info.episode_id] = len(self._infos)
    self._infos.append(info)
    self._num_steps += info.length
    return True

  def _read_record(self, info: EpisodeInfo) -> Tuple[Dict[str, Any], memoryview]:
    try:
      with open(self._dir / info.segment, 'rb', buffering=0) as f:
        f.seek(info.offset)
        data = bytearray(info.size)
        view, got = memoryview(data), 0
        while got < info.size:
          n = f.readinto(view[got:])
          if not n:
            raise CorruptRecordError(f'{info.segment} ends inside the record at {info.offset}')
          got += n
    except FileNotFoundError as e:
      raise CorruptRecordError(f'segment {info.segment} is missing') from e
    header, payload = _check_record(data)
    if header.get('id') != info.episode_id:
      raise CorruptRecordError(f'record at {info.segment}:{info.offset} holds '
                               f'{header.get("id")!r}, the index says {info.episode_id!r}')
    return header, payload

  def _ensure_loaded(self) -> None:
    if not self._loaded:
      self.refresh()

  def __len__(self) -> int:
    self._ensure_loaded()
    return len(self._infos)

  @property
  def num_steps(self) -> int:
    """Total steps (actions) over all visible episodes."""
    self._ensure_loaded()
    return self._num_steps

  def index(self) -> List[EpisodeInfo]:
    """All visible episodes, in the order they were taken in (append-only)."""
    self._ensure_loaded()
    return list(self._infos)

  def __contains__(self, episode_id: str) -> bool:
    self._ensure_loaded()
    return episode_id in self._by_id

  def read(self, episode_id: str) -> Episode:
    """The stored episode; KeyError if unknown, CorruptRecordError if damaged."""
    self._ensure_loaded()
    info = self._infos[self._by_id[episode_id]]
    header, payload = self._read_record(info)
    return Episode(**_decode_arrays(header, payload), metadata=header['metadata'])

  def __iter__(self) -> Iterator[Episode]:
    for info in self.index():
      yield self.read(info.episode_id)
