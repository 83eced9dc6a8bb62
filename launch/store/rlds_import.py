"""Import of an RLDS dataset directory (TFDS's on-disk layout) into Episodes.

The layout, the features and their encodings are described in `launch.store.rlds_format`.

Import validates every record and never loads a bad one silently: shapes and
dtypes against features.json (or an ``expected`` spec), NaN/inf anywhere,
is_first/is_last/is_terminal consistency, unparseable metadata, and damaged
files (checksum mismatches, truncation, records missing against
``shardLengths``). Each problem is reported by file, record and dataset
episode index; ``on_error='refuse'`` raises ``BadRecordError`` at the first
one, ``on_error='skip'`` leaves it out and lists it in the report.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import struct
import zlib
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf import message as proto_message
# The random-access reader is TensorFlow's own, used only to resume reading a
# shard after a damaged record (TFRecordDataset cannot skip past one).
from tensorflow.python.lib.io import tf_record

from agents.common.errors import ConfigError
from launch.store.episodes import Episode
from launch.store.rlds_format import (DATASET_INFO_FILE, FEATURES_FILE, FILEPATH_TEMPLATE, FLAGS,
                                      FOOTER_BYTES, HEADER_BYTES, METADATA_KEY, STEP_FIELDS,
                                      BadRecord, BadRecordError, EpisodeSpec, Field, PathLike,
                                      RldsError, check_dtype, fields_for, masked_crc32c)


@dataclasses.dataclass
class ImportReport:
  """What an import loaded and what it skipped."""
  directory: str
  dataset_name: str = ''
  spec: Optional[EpisodeSpec] = None
  expected_episodes: int = 0  # as dataset_info.json lists them
  loaded: int = 0
  bad: List[BadRecord] = dataclasses.field(default_factory=list)

  @property
  def skipped(self) -> int:
    return sum(b.count for b in self.bad)

  @property
  def ok(self) -> bool:
    return not self.bad

  def summary(self) -> str:
    """Multi-line text: a count line, then one line per bad record."""
    lines = [f'{self.directory}: loaded {self.loaded} of '
             f'{self.expected_episodes} episodes, skipped {self.skipped}']
    lines.extend(f'  skipped {b}' for b in self.bad)
    return '\n'.join(lines)


class _Invalid(Exception):
  """A record that decodes but breaks the format; the message is the reason."""


# --- Reading TFRecord files, past damaged records ---


class _Record(NamedTuple):
  index: int
  data: Optional[bytes]
  error: Optional[str] = None
  count: int = 1


def _damage_at(path: pathlib.Path, offset: int, size: int) -> Tuple[str, Optional[int]]:
  """Classifies damage at a record offset: (reason, next record's offset or None).

  The length in a record's header is protected by its own checksum, so when
  the header is intact the next record can be found even if the data is not.
  """
  with open(path, 'rb') as f:
    f.seek(offset)
    header = f.read(HEADER_BYTES)
  if len(header) < HEADER_BYTES:
    return (f'truncated: the file ends {len(header)} bytes into a record header',
            None)
  length, crc = struct.unpack('<QI', header)
  if masked_crc32c(header[:8]) != crc:
    return 'record header corrupted (checksum mismatch)', None
  end = offset + HEADER_BYTES + length + FOOTER_BYTES
  if end > size:
    return (f'truncated: the record needs {end - offset} bytes, the file ends '
            f'{size - offset} bytes into it'), None
  return 'record data corrupted (checksum mismatch)', end


def _shard_records(path: pathlib.Path, listed: int) -> Iterator[_Record]:
  """Yields each record of a TFRecord file, or the damage in its place.

  ``listed`` is how many records dataset_info.json says the file holds; when
  damage leaves the rest of the file unreadable, one _Record covers the rest.
  """
  size = path.stat().st_size
  offset, index = 0, 0
  records = iter(tf.data.TFRecordDataset(str(path)))
  random_reader = None

  def rest(reason: str) -> _Record:
    count = max(1, listed - index)
    if count > 1:
      reason += '; the rest of the file cannot be read'
    return _Record(index, None, reason, count)

  while offset < size:
    try:
      if random_reader is None:
        data = next(records).numpy()
      else:
        data, _ = random_reader.read(offset)
    except (StopIteration, IndexError):
      # Both readers treat a file that stops inside a record header as its
      # end; the leftover bytes are a truncated record.
      yield rest(_damage_at(path, offset, size)[0])
      return
    except tf.errors.DataLossError:
      reason, next_offset = _damage_at(path, offset, size)
      if next_offset is None:
        yield rest(reason)
        return
      yield _Record(index, None, reason)
      index += 1
      offset = next_offset
      if random_reader is None:
        random_reader = tf_record.tf_record_random_reader(str(path))
      continue
    yield _Record(index, bytes(data))
    index += 1
    offset += HEADER_BYTES + len(data) + FOOTER_BYTES


def _load_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except FileNotFoundError:
    raise
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise RldsError(f'{path}: unreadable or not valid JSON ({e})') from e


def _read_shard_list(root: pathlib.Path) -> Tuple[str, List[Tuple[str, int]]]:
  """(dataset name, [(shard file name, episodes listed)]) from dataset_info.json."""
  path = root / DATASET_INFO_FILE
  try:
    info = _load_json(path)
  except FileNotFoundError:
    raise RldsError(f'{path} is missing: not a TFDS dataset directory, or an '
                    'unfinished export') from None
  try:
    name = info['name']
    file_format = info.get('fileFormat', 'tfrecord')
    if file_format != 'tfrecord':
      raise RldsError(f'{path}: fileFormat {file_format!r}; only tfrecord is supported')
    shards = []
    for split in info['splits']:
      template = split.get('filepathTemplate', FILEPATH_TEMPLATE)
      lengths = [int(n) for n in split['shardLengths']]
      for i, listed in enumerate(lengths):
        file_name = template.format(
            DATASET=name, SPLIT=split['name'], FILEFORMAT=file_format,
            SHARD_X_OF_Y=f'{i:05d}-of-{len(lengths):05d}',
            SHARD_INDEX=f'{i:05d}', NUM_SHARDS=f'{len(lengths):05d}')
        # The names come from the file: keep them inside the dataset directory.
        if pathlib.PurePath(file_name).name != file_name or file_name in ('.', '..'):
          raise RldsError(f'{path}: shard name {file_name!r} is not a plain file name')
        shards.append((file_name, listed))
  except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
    raise RldsError(f'{path}: no usable split list ({type(e).__name__}: {e})') from e
  return str(name), shards


def _tensor_field(path: pathlib.Path, key: str, feature: Any) -> Field:
  if not isinstance(feature, dict) or 'tensor' not in feature:
    kind = feature.get('pythonClassName', '?') if isinstance(feature, dict) else '?'
    raise RldsError(f'{path}: {key} is a {kind}; only a single tensor per field '
                    'is supported')
  try:
    tensor = feature['tensor']
    shape = tuple(int(d) for d in tensor.get('shape', {}).get('dimensions', []))
    dtype = np.dtype(tensor['dtype'])
    encoding = str(tensor.get('encoding', 'none')).lower()
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise RldsError(f'{path}: {key} has an unreadable tensor description ({e})') from e
  if any(d < 0 for d in shape):
    raise RldsError(f'{path}: {key} has a variable shape {list(shape)}; only fixed '
                    'shapes are supported')
  problem = check_dtype(dtype)
  if problem:
    raise RldsError(f'{path}: {key}: {problem}')
  if encoding not in ('none', 'bytes', 'zlib'):
    raise RldsError(f'{path}: {key} has unknown encoding {encoding!r}')
  return Field(shape, dtype, encoding)


def _read_features(root: pathlib.Path,
                   expected: Optional[EpisodeSpec]) -> Tuple[Dict[str, Field], EpisodeSpec]:
  """The step fields the dataset declares, checked against ``expected``."""
  path = root / FEATURES_FILE
  try:
    doc = _load_json(path)
  except FileNotFoundError:
    if expected is None:
      raise RldsError(f'{path} is missing: pass expected= to say what the '
                      'episodes hold') from None
    return fields_for(expected), expected
  try:
    top = doc['featuresDict']['features']
    steps = top['steps']['sequence']['feature']['featuresDict']['features']
  except (KeyError, TypeError) as e:
    raise RldsError(f'{path}: no steps sequence feature (not an RLDS dataset)') from e
  fields = {}
  for name in STEP_FIELDS:
    if name not in steps:
      raise RldsError(f'{path}: steps/{name} is not declared')
    fields[name] = _tensor_field(path, f'steps/{name}', steps[name])
  for name in ('reward', 'discount'):
    if fields[name].shape:
      raise RldsError(f'{path}: steps/{name} has shape {list(fields[name].shape)}; '
                      'a scalar is expected')
  for name in FLAGS:
    if fields[name].shape or fields[name].dtype != bool:
      raise RldsError(f'{path}: steps/{name} must be a bool scalar')
  try:
    metadata = top['episode_metadata']['featuresDict']['features'][
        METADATA_KEY.split('/')[1]]
  except (KeyError, TypeError):
    raise RldsError(f'{path}: {METADATA_KEY} is not declared') from None
  if not isinstance(metadata, dict) or 'text' not in metadata:
    raise RldsError(f'{path}: {METADATA_KEY} is not a text feature')
  spec = EpisodeSpec(fields['observation'].shape, fields['observation'].dtype,
                     fields['action'].shape, fields['action'].dtype,
                     fields['reward'].dtype, fields['discount'].dtype)
  if expected is not None and expected != spec:
    raise RldsError(f'{root} holds {spec.describe()}; expected {expected.describe()}')
  return fields, spec


def _decode_field(features: Any, name: str, field: Field, n: int) -> np.ndarray:
  """The [n, *shape] array of one step field, or _Invalid."""
  key = f'steps/{name}'
  if key not in features:
    raise _Invalid(f'{key} is missing')
  feature = features[key]
  kind = feature.WhichOneof('kind')
  if kind != field.list_kind:
    raise _Invalid(f'{key} is stored as {kind or "no values"}; a {field.dtype.name} '
                   f'field with encoding {field.encoding!r} needs a {field.list_kind}')
  if field.encoding == 'none':
    values = getattr(feature, kind).value
    if len(values) != n * field.size:
      raise _Invalid(f'{key} holds {len(values)} values; {n} steps of shape '
                     f'{list(field.shape)} need {n * field.size}')
    if kind == 'float_list':
      array = np.asarray(values, np.float32).astype(field.dtype)
    else:
      array = np.asarray(values, np.int64)
      if field.dtype == bool:
        low, high = 0, 1
      else:
        low, high = np.iinfo(field.dtype).min, np.iinfo(field.dtype).max
      if array.size and (array.min() < low or array.max() > high):
        raise _Invalid(f'{key} holds values outside the {field.dtype.name} range')
      array = array.astype(field.dtype)
  else:
    entries = list(feature.bytes_list.value)
    if len(entries) != n:
      raise _Invalid(f'{key} holds {len(entries)} entries for {n} steps')
    if field.encoding == 'zlib':
      try:
        entries = [zlib.decompress(e) for e in entries]
      except zlib.error as e:
        raise _Invalid(f'{key}: bad zlib data ({e})') from e
    step_bytes = field.size * field.dtype.itemsize
    for t, entry in enumerate(entries):
      if len(entry) != step_bytes:
        raise _Invalid(f'{key} step {t} holds {len(entry)} bytes; shape '
                       f'{list(field.shape)} of {field.dtype.name} needs {step_bytes}')
    array = np.frombuffer(b''.join(entries), field.dtype.newbyteorder('<'))
    array = array.astype(field.dtype)
  array = array.reshape((n,) + field.shape)
  if field.dtype.kind == 'f':
    finite = np.isfinite(array.reshape(n, -1)).all(axis=1)
    if not finite.all():
      raise _Invalid(f'{key} has NaN or inf at step {int(np.argmin(finite))}')
  return array


def _decode_episode(data: bytes, fields: Dict[str, Field]) -> Episode:
  """One validated Episode from a record's bytes, or _Invalid."""
  try:
    example = tf.train.Example.FromString(data)
  except proto_message.DecodeError as e:
    raise _Invalid(f'not a tf.train.Example ({e})') from e
  features = example.features.feature
  if 'steps/is_first' not in features:
    raise _Invalid('steps/is_first is missing')
  first = features['steps/is_first']
  if first.WhichOneof('kind') != 'int64_list':
    raise _Invalid('steps/is_first is not stored as an int64_list')
  n = len(first.int64_list.value)
  if n == 0:
    raise _Invalid('the episode has no steps')
  arrays = {name: _decode_field(features, name, field, n)
            for name, field in fields.items()}
  steps = n - 1
  position = np.arange(n)
  if not np.array_equal(arrays['is_first'], position == 0):
    raise _Invalid('steps/is_first must be True on step 0 only')
  if not np.array_equal(arrays['is_last'], position == steps):
    raise _Invalid(f'steps/is_last must be True on step {steps} (the last) only')
  terminal = arrays['is_terminal']
  if terminal[:-1].any():
    raise _Invalid('steps/is_terminal is True before the last step')
  ends_terminal = steps > 0 and arrays['discount'][steps - 1] == 0
  if bool(terminal[-1]) != ends_terminal:
    raise _Invalid(f'steps/is_terminal is {bool(terminal[-1])} on the last step but '
                   f'the last discount is '
                   f'{arrays["discount"][steps - 1] if steps else "absent"}')
  if METADATA_KEY not in features:
    raise _Invalid(f'{METADATA_KEY} is missing')
  texts = features[METADATA_KEY].bytes_list.value
  if len(texts) != 1:
    raise _Invalid(f'{METADATA_KEY} holds {len(texts)} values, not 1')
  try:
    metadata = json.loads(texts[0].decode('utf-8'))
  except (UnicodeDecodeError, ValueError) as e:
    raise _Invalid(f'{METADATA_KEY} is not valid JSON ({e})') from e
  if not isinstance(metadata, dict):
    raise _Invalid(f'{METADATA_KEY} is a JSON {type(metadata).__name__}, not an object')
  return Episode(observations=arrays['observation'],
                 actions=arrays['action'][:steps].copy(),
                 rewards=arrays['reward'][:steps].copy(),
                 discounts=arrays['discount'][:steps].copy(),
                 metadata=metadata)


def import_rlds(in_dir: PathLike, on_error: str = 'skip',
                expected: Optional[EpisodeSpec] = None
                ) -> Tuple[List[Episode], ImportReport]:
  """Reads an RLDS dataset directory (as export_rlds writes it) into Episodes.

  Args:
    in_dir: the directory holding dataset_info.json, features.json and shards.
    on_error: 'skip' leaves bad records out and lists them in the report;
      'refuse' raises BadRecordError at the first one.
    expected: if given, the dataset must hold episodes of this spec (and it
      stands in for a missing features.json).

  Returns:
    The good episodes in dataset order, and the report of what was skipped.
    Record features that features.json does not declare (extra fields other
    tools may add) are ignored.

  Raises:
    ConfigError: on_error is neither 'skip' nor 'refuse'.
    RldsError: the directory, dataset_info.json or features.json is unusable,
      or the dataset does not match ``expected``.
    BadRecordError: under 'refuse', naming the file, episode and reason of
      the first bad record.
  """
  if on_error not in ('skip', 'refuse'):
    raise ConfigError(f"on_error must be 'skip' or 'refuse', got {on_error!r}")
  if expected is not None:
    for name in ('observation_dtype', 'action_dtype', 'reward_dtype', 'discount_dtype'):
      problem = check_dtype(getattr(expected, name))
      if problem:
        raise ConfigError(f'expected.{name}: {problem}')
  root = pathlib.Path(in_dir)
  if not root.is_dir():
    raise RldsError(f'{root} is not a directory')
  name, shards = _read_shard_list(root)
  fields, spec = _read_features(root, expected)
  report = ImportReport(directory=str(root), dataset_name=name, spec=spec,
                        expected_episodes=sum(listed for _, listed in shards))
  episodes: List[Episode] = []

  def reject(bad: BadRecord) -> None:
    if on_error == 'refuse':
      raise BadRecordError(bad)
    report.bad.append(bad)

  first_episode = 0
  for file_name, listed in shards:
    path = root / file_name
    if not path.is_file():
      if listed:
        reject(BadRecord(file_name, 0, first_episode, 'the shard file is missing',
                         listed))
      first_episode += listed
      continue
    seen = 0
    for record in _shard_records(path, listed):
      seen = record.index + record.count
      if record.index >= listed:
        reject(BadRecord(file_name, record.index, first_episode + record.index,
                         f'dataset_info.json lists {listed} records for this file',
                         record.count))
      elif record.error is not None:
        reject(BadRecord(file_name, record.index, first_episode + record.index,
                         record.error, min(record.count, listed - record.index)))
      else:
        try:
          episodes.append(_decode_episode(record.data, fields))
        except _Invalid as e:
          reject(BadRecord(file_name, record.index, first_episode + record.index,
                           str(e)))
    if seen < listed:
      reject(BadRecord(file_name, seen, first_episode + seen,
                       f'missing: the file ends after {seen} records, '
                       f'dataset_info.json lists {listed}', listed - seen))
    first_episode += listed
  report.loaded = len(episodes)
  return episodes, report
