"""Export and import of stored episodes as RLDS datasets, in TFDS's on-disk layout.

RLDS (github.com/google-research/rlds) is the field's episode format: a
dataset of episodes, each a sequence of steps plus episode metadata. This
module writes it the way TensorFlow Datasets stores an RLDS dataset, so
``tfds.builder_from_directory(out_dir).as_dataset(split='train')`` can read an
export, and reads such a directory back with plain TensorFlow (no TFDS needed).

Layout of an export directory::

    <out_dir>/dataset_info.json
    <out_dir>/features.json
    <out_dir>/<name>-train.tfrecord-00000-of-000NN
    ...
    <out_dir>/<name>-train.tfrecord-000NN-1-of-000NN

Each shard is a TFRecord file; each record is one episode, a serialized
``tf.train.Example``. A stored episode of T steps becomes T + 1 RLDS steps;
each step field is flattened across steps into one feature, as TFDS encodes a
``tfds.features.Dataset`` of a ``FeaturesDict``:

    steps/observation  [T+1, *obs_shape]     observations[t]
    steps/action       [T+1, *action_shape]  actions[t]; zeros on the last step
    steps/reward       [T+1]                 rewards[t]; 0 on the last step
    steps/discount     [T+1]                 discounts[t]; 0 on the last step
    steps/is_first     [T+1] bool            True on step 0 only
    steps/is_last      [T+1] bool            True on step T only
    steps/is_terminal  [T+1] bool            True on step T iff discounts[T-1] == 0
    episode_metadata/metadata_json  text     the episode's metadata as JSON

The last step carries the final observation; RLDS treats its action, reward
and discount as invalid, so they are zero padding and are dropped on import.

Feature encodings follow ``tfds.features.Tensor``: float32 values go in a
``float_list`` and bool/integer values in an ``int64_list`` (encoding
"none"); float16 and float64 values are stored as one little-endian raw-bytes
entry per step in a ``bytes_list`` (encoding "bytes"), because a float_list
holds float32 and would round them. Every supported dtype therefore round
trips bit-exactly. uint64 and non-numeric arrays are refused.

``features.json`` is the JSON form of TFDS's ``FeaturesDict`` (steps is a
``dataset_feature.Dataset`` of length -1 holding ``tensor_feature.Tensor`` and
``scalar.Scalar`` features; the metadata is a ``text_feature.Text``), and
``dataset_info.json`` the JSON form of TFDS's ``DatasetInfo`` proto (name,
version 1.0.0, ``fileFormat`` tfrecord, one ``train`` split with its
``shardLengths``, ``numBytes`` and ``filepathTemplate``; int64 values are
strings, as protobuf writes them).

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
import os
import pathlib
import re
import struct
import zlib
from typing import (Any, Dict, Iterable, Iterator, List, NamedTuple, Optional,
                    Tuple, Union)

import numpy as np
import tensorflow as tf
from google.protobuf import message as proto_message
# The random-access reader is TensorFlow's own, used only to resume reading a
# shard after a damaged record (TFRecordDataset cannot skip past one).
from tensorflow.python.lib.io import tf_record

from agents.common.errors import ConfigError, UserError
from agents.common.files import atomic_write_bytes
from launch.store.episodes import Episode

PathLike = Union[str, os.PathLike]

DEFAULT_DATASET_NAME = 'collect_infer_episodes'
SPLIT = 'train'
VERSION = '1.0.0'
FEATURES_FILE = 'features.json'
DATASET_INFO_FILE = 'dataset_info.json'
FILEPATH_TEMPLATE = '{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}'
METADATA_KEY = 'episode_metadata/metadata_json'
STEP_FIELDS = ('observation', 'action', 'reward', 'discount', 'is_first',
               'is_last', 'is_terminal')
_FLAGS = ('is_first', 'is_last', 'is_terminal')

_TFDS = 'tensorflow_datasets.core.features.'
_FEATURES_DICT = _TFDS + 'features_dict.FeaturesDict'
_DATASET = _TFDS + 'dataset_feature.Dataset'
_TENSOR = _TFDS + 'tensor_feature.Tensor'
_SCALAR = _TFDS + 'scalar.Scalar'
_TEXT = _TFDS + 'text_feature.Text'

_NAME_RE = re.compile(r'^[a-z][a-z0-9_]*$')
# A TFRecord is: uint64 length, uint32 masked crc32c(length), data,
# uint32 masked crc32c(data); all little-endian.
_HEADER_BYTES = 12
_FOOTER_BYTES = 4

_DESCRIPTIONS = {
    'observation': 'Observation before the action; the final one on the last step.',
    'action': 'Action taken after the observation; zeros on the last step.',
    'reward': 'Reward following the action; 0 on the last step.',
    'discount': 'Discount following the action (0: terminal); 0 on the last step.',
    'is_first': 'True on the first step of the episode.',
    'is_last': 'True on the last step of the episode.',
    'is_terminal': 'True on the last step if the episode ended in a terminal state.',
}


class RldsError(UserError):
  """An RLDS export or import that can't proceed (bad input, unusable directory)."""


class BadRecordError(RldsError):
  """A damaged or invalid episode record, raised under ``on_error='refuse'``."""

  def __init__(self, bad: 'BadRecord'):
    super().__init__(
        f'RLDS import refused: {bad}. Nothing was loaded; repair or remove the '
        "file, or pass on_error='skip' to load the other episodes.")
    self.bad = bad
    self.file = bad.file
    self.episode = bad.episode
    self.reason = bad.reason


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """Per-step shapes and dtypes shared by every episode of a dataset."""
  observation_shape: Tuple[int, ...]
  observation_dtype: np.dtype
  action_shape: Tuple[int, ...]
  action_dtype: np.dtype
  reward_dtype: np.dtype = np.dtype(np.float32)
  discount_dtype: np.dtype = np.dtype(np.float32)

  def __post_init__(self):
    # Normalise so specs built from shapes as lists or dtypes as strings
    # compare equal to ones read from a dataset.
    for name in ('observation_shape', 'action_shape'):
      object.__setattr__(self, name, tuple(int(d) for d in getattr(self, name)))
    for name in ('observation_dtype', 'action_dtype', 'reward_dtype',
                 'discount_dtype'):
      object.__setattr__(self, name, np.dtype(getattr(self, name)))

  @classmethod
  def from_episode(cls, episode: Episode) -> 'EpisodeSpec':
    """The spec an episode's arrays have (its step shapes, not its length)."""
    obs = np.asarray(episode.observations)
    act = np.asarray(episode.actions)
    return cls(obs.shape[1:], obs.dtype, act.shape[1:], act.dtype,
               np.asarray(episode.rewards).dtype,
               np.asarray(episode.discounts).dtype)

  def describe(self) -> str:
    """One-line text, e.g. 'observation float32[5], action float32[1], ...'."""
    def one(dtype, shape):
      return f'{dtype.name}{list(shape)}' if shape else dtype.name
    return (f'observation {one(self.observation_dtype, self.observation_shape)}, '
            f'action {one(self.action_dtype, self.action_shape)}, '
            f'reward {self.reward_dtype.name}, discount {self.discount_dtype.name}')


@dataclasses.dataclass(frozen=True)
class BadRecord:
  """Episodes of a dataset that could not be loaded, and why.

  ``count`` is more than 1 when damage makes the rest of a file unreadable or
  records are missing: it then covers records ``record .. record+count-1``.
  """
  file: str  # shard file name, relative to the dataset directory
  record: int  # index of the (first) record within the file
  episode: int  # index of the (first) episode within the dataset
  reason: str
  count: int = 1

  def __str__(self) -> str:
    if self.count == 1:
      where = f'record {self.record} (episode {self.episode})'
    else:
      where = (f'records {self.record}-{self.record + self.count - 1} '
               f'(episodes {self.episode}-{self.episode + self.count - 1})')
    return f'{self.file}, {where}: {self.reason}'


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


@dataclasses.dataclass(frozen=True)
class ExportSummary:
  """What an export wrote."""
  directory: pathlib.Path
  dataset_name: str
  spec: EpisodeSpec
  num_episodes: int
  num_steps: int  # sum of the episodes' T (RLDS steps are this + num_episodes)
  shard_files: Tuple[str, ...]
  shard_lengths: Tuple[int, ...]
  num_bytes: int  # total size of the shard files


class _Field(NamedTuple):
  """How one step field is stored: per-step shape, dtype and TFDS encoding."""
  shape: Tuple[int, ...]
  dtype: np.dtype
  encoding: str  # 'none' | 'bytes' | 'zlib' (zlib only read, never written)

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def list_kind(self) -> str:
    if self.encoding != 'none':
      return 'bytes_list'
    return 'float_list' if self.dtype.kind == 'f' else 'int64_list'


class _Invalid(Exception):
  """A record that decodes but breaks the format; the message is the reason."""


def _check_dtype(dtype: np.dtype) -> Optional[str]:
  """None if the dtype can be stored exactly, else why not."""
  if dtype.kind == 'f' and dtype.itemsize in (2, 4, 8):
    return None
  if dtype.kind == 'b' or (dtype.kind in 'iu' and dtype.itemsize <= 8):
    if dtype == np.uint64:
      return 'uint64 does not fit the int64 values a tf.train.Example holds'
    return None
  return f'dtype {dtype} is not supported (use bool, integers or floats)'


def _export_encoding(dtype: np.dtype) -> str:
  # float_list holds float32: wider or narrower floats go as raw bytes so
  # they come back bit-exact.
  return 'bytes' if dtype.kind == 'f' and dtype != np.float32 else 'none'


def _fields_for(spec: EpisodeSpec) -> Dict[str, _Field]:
  flag = _Field((), np.dtype(bool), 'none')
  pairs = {'observation': (spec.observation_shape, spec.observation_dtype),
           'action': (spec.action_shape, spec.action_dtype),
           'reward': ((), spec.reward_dtype),
           'discount': ((), spec.discount_dtype)}
  fields = {name: _Field(shape, dtype, _export_encoding(dtype))
            for name, (shape, dtype) in pairs.items()}
  fields.update({name: flag for name in _FLAGS})
  return fields


# --- TFRecord framing checks (used only to step past a damaged record) ---


def _make_crc32c_table() -> List[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC32C_TABLE = _make_crc32c_table()


def _masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


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
    header = f.read(_HEADER_BYTES)
  if len(header) < _HEADER_BYTES:
    return (f'truncated: the file ends {len(header)} bytes into a record header',
            None)
  length, crc = struct.unpack('<QI', header)
  if _masked_crc32c(header[:8]) != crc:
    return 'record header corrupted (checksum mismatch)', None
  end = offset + _HEADER_BYTES + length + _FOOTER_BYTES
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
    offset += _HEADER_BYTES + len(data) + _FOOTER_BYTES


# --- Export ---


def _step_feature(values: np.ndarray, field: _Field) -> tf.train.Feature:
  """One step field, stacked over steps, as TFDS encodes a Sequence of Tensor."""
  if field.encoding == 'bytes':
    little = values.astype(field.dtype.newbyteorder('<'), copy=False)
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[step.tobytes() for step in little]))
  if field.list_kind == 'float_list':
    return tf.train.Feature(float_list=tf.train.FloatList(
        value=values.ravel().tolist()))
  return tf.train.Feature(int64_list=tf.train.Int64List(
      value=values.astype(np.int64).ravel().tolist()))


def _prepare(episode: Episode, index: int) -> Tuple[EpisodeSpec, str]:
  """Checks an episode can be exported faithfully; returns its spec and metadata JSON."""
  def fail(reason: str) -> RldsError:
    return RldsError(f'episode {index} of the export: {reason}')

  obs = np.asarray(episode.observations)
  act = np.asarray(episode.actions)
  rew = np.asarray(episode.rewards)
  disc = np.asarray(episode.discounts)
  if rew.ndim != 1:
    raise fail(f'rewards have shape {rew.shape}, expected [T]')
  steps = rew.shape[0]
  if act.ndim < 1 or act.shape[0] != steps:
    raise fail(f'actions have shape {act.shape}, expected [T={steps}, ...]')
  if disc.shape != (steps,):
    raise fail(f'discounts have shape {disc.shape}, expected [T={steps}]')
  if obs.ndim < 1 or obs.shape[0] != steps + 1:
    raise fail(f'observations have shape {obs.shape}, expected [T+1={steps + 1}, ...]')
  for name, arr in (('observations', obs), ('actions', act), ('rewards', rew),
                    ('discounts', disc)):
    problem = _check_dtype(arr.dtype)
    if problem:
      raise fail(f'{name}: {problem}')
    if arr.dtype.kind == 'f' and not np.isfinite(arr).all():
      raise fail(f'{name} contain NaN or inf')
  if not isinstance(episode.metadata, dict):
    raise fail(f'metadata is a {type(episode.metadata).__name__}, not a dict')
  try:
    metadata = json.dumps(episode.metadata, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise fail(f'metadata is not JSON-serialisable ({e})') from e
  return EpisodeSpec.from_episode(episode), metadata


def _episode_example(episode: Episode, fields: Dict[str, _Field],
                     metadata: str) -> tf.train.Example:
  act = np.asarray(episode.actions)
  rew = np.asarray(episode.rewards)
  disc = np.asarray(episode.discounts)
  steps = rew.shape[0]
  n = steps + 1
  values = {
      'observation': np.asarray(episode.observations),
      'action': np.concatenate([act, np.zeros((1,) + act.shape[1:], act.dtype)]),
      'reward': np.append(rew, np.zeros(1, rew.dtype)),
      'discount': np.append(disc, np.zeros(1, disc.dtype)),
      'is_first': np.arange(n) == 0,
      'is_last': np.arange(n) == n - 1,
      'is_terminal': (np.arange(n) == n - 1) & (steps > 0 and disc[-1] == 0),
  }
  feature = {f'steps/{name}': _step_feature(values[name], field)
             for name, field in fields.items()}
  feature[METADATA_KEY] = tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[metadata.encode('utf-8')]))
  return tf.train.Example(features=tf.train.Features(feature=feature))


def _features_json(fields: Dict[str, _Field]) -> Dict[str, Any]:
  def tensor(name: str, field: _Field) -> Dict[str, Any]:
    shape = {'dimensions': [str(d) for d in field.shape]} if field.shape else {}
    return {
        'pythonClassName': _SCALAR if name in _FLAGS else _TENSOR,
        'tensor': {'shape': shape, 'dtype': field.dtype.name,
                   'encoding': field.encoding},
        'description': _DESCRIPTIONS[name],
    }
  return {
      'pythonClassName': _FEATURES_DICT,
      'featuresDict': {'features': {
          'steps': {
              'pythonClassName': _DATASET,
              'sequence': {
                  'feature': {
                      'pythonClassName': _FEATURES_DICT,
                      'featuresDict': {'features': {
                          name: tensor(name, field) for name, field in fields.items()}},
                  },
                  'length': '-1',
              },
          },
          'episode_metadata': {
              'pythonClassName': _FEATURES_DICT,
              'featuresDict': {'features': {
                  METADATA_KEY.split('/')[1]: {
                      'pythonClassName': _TEXT,
                      'text': {},
                      'description': 'The episode metadata, a JSON object.',
                  }}},
          },
      }},
  }


def _shard_name(name: str, index: int, num_shards: int) -> str:
  return FILEPATH_TEMPLATE.format(
      DATASET=name, SPLIT=SPLIT, FILEFORMAT='tfrecord',
      SHARD_X_OF_Y=f'{index:05d}-of-{num_shards:05d}')


def _write_json(path: pathlib.Path, doc: Dict[str, Any]) -> None:
  atomic_write_bytes(path, (json.dumps(doc, indent=2) + '\n').encode('utf-8'))


def export_rlds(episodes: Iterable[Episode], out_dir: PathLike,
                dataset_name: str = DEFAULT_DATASET_NAME, shard_size: int = 100,
                description: str = '') -> ExportSummary:
  """Writes episodes as an RLDS dataset in TFDS's layout (see the module doc).

  Args:
    episodes: episodes sharing observation/action shapes and dtypes; any
      iterable, consumed once.
    out_dir: a new or empty directory; it receives the shards, features.json
      and dataset_info.json.
    dataset_name: the TFDS dataset name (snake_case), the shard file prefix.
    shard_size: episodes per shard file.
    description: free text stored in dataset_info.json.

  Returns:
    What was written.

  Raises:
    ConfigError: an invalid name or shard size.
    RldsError: out_dir is not empty, there are no episodes, or an episode
      can't be stored faithfully (shapes, dtype, NaN, metadata); nothing is
      left behind in that case.
  """
  if not _NAME_RE.match(dataset_name):
    raise ConfigError(f'dataset_name {dataset_name!r} must be snake_case '
                      '(lowercase letters, digits, underscores; a letter first)')
  if shard_size < 1:
    raise ConfigError(f'shard_size must be at least 1, got {shard_size}')
  out = pathlib.Path(out_dir)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise RldsError(f'{out} already exists and is not an empty directory; '
                    'export into a new one')
  created_dir = not out.exists()
  out.mkdir(parents=True, exist_ok=True)

  written: List[pathlib.Path] = []  # to remove if the export fails
  lengths: List[int] = []
  spec: Optional[EpisodeSpec] = None
  fields: Dict[str, _Field] = {}
  num_steps = 0
  writer = None
  try:
    for index, episode in enumerate(episodes):
      episode_spec, metadata = _prepare(episode, index)
      if spec is None:
        spec, fields = episode_spec, _fields_for(episode_spec)
      elif episode_spec != spec:
        raise RldsError(f'episode {index} of the export has {episode_spec.describe()}; '
                        f'episode 0 has {spec.describe()} (one dataset, one spec)')
      if writer is None or lengths[-1] >= shard_size:
        if writer is not None:
          writer.close()
        # The final names need the shard count, known only at the end.
        partial = out / f'.{dataset_name}-{SPLIT}.{len(lengths):05d}.partial'
        written.append(partial)
        writer = tf.io.TFRecordWriter(str(partial))
        lengths.append(0)
      writer.write(_episode_example(episode, fields, metadata).SerializeToString())
      lengths[-1] += 1
      num_steps += episode.length
    if writer is not None:
      writer.close()
      writer = None
    if spec is None:
      raise RldsError('no episodes to export')

    names = [_shard_name(dataset_name, i, len(lengths)) for i in range(len(lengths))]
    for i, name in enumerate(names):
      os.replace(written[i], out / name)
      written[i] = out / name
    num_bytes = sum(p.stat().st_size for p in written)
    written.append(out / FEATURES_FILE)
    _write_json(out / FEATURES_FILE, _features_json(fields))
    # Written last: a directory without it is an unfinished export.
    written.append(out / DATASET_INFO_FILE)
    _write_json(out / DATASET_INFO_FILE, {
        'name': dataset_name,
        'description': description or
                       'Episodes exported from a Collect & Infer store (RLDS).',
        'version': VERSION,
        'fileFormat': 'tfrecord',
        'citation': '',
        'splits': [{
            'name': SPLIT,
            'filepathTemplate': FILEPATH_TEMPLATE,
            'numBytes': str(num_bytes),
            'shardLengths': [str(n) for n in lengths],
        }],
    })
  except BaseException:
    if writer is not None:
      writer.close()
    for path in written:
      path.unlink(missing_ok=True)
    if created_dir and not any(out.iterdir()):
      out.rmdir()
    raise
  return ExportSummary(directory=out, dataset_name=dataset_name, spec=spec,
                       num_episodes=sum(lengths), num_steps=num_steps,
                       shard_files=tuple(names), shard_lengths=tuple(lengths),
                       num_bytes=num_bytes)


# --- Import ---


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


def _tensor_field(path: pathlib.Path, key: str, feature: Any) -> _Field:
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
  problem = _check_dtype(dtype)
  if problem:
    raise RldsError(f'{path}: {key}: {problem}')
  if encoding not in ('none', 'bytes', 'zlib'):
    raise RldsError(f'{path}: {key} has unknown encoding {encoding!r}')
  return _Field(shape, dtype, encoding)


def _read_features(root: pathlib.Path,
                   expected: Optional[EpisodeSpec]) -> Tuple[Dict[str, _Field], EpisodeSpec]:
  """The step fields the dataset declares, checked against ``expected``."""
  path = root / FEATURES_FILE
  try:
    doc = _load_json(path)
  except FileNotFoundError:
    if expected is None:
      raise RldsError(f'{path} is missing: pass expected= to say what the '
                      'episodes hold') from None
    return _fields_for(expected), expected
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
  for name in _FLAGS:
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


def _decode_field(features: Any, name: str, field: _Field, n: int) -> np.ndarray:
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


def _decode_episode(data: bytes, fields: Dict[str, _Field]) -> Episode:
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
      problem = _check_dtype(getattr(expected, name))
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
