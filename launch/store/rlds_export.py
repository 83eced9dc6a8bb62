"""Export of stored episodes as an RLDS dataset, in TFDS's on-disk layout.

The layout, the features and their encodings are described in `launch.store.rlds_format`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import zlib
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from agents.common.errors import ConfigError
from agents.common.files import atomic_write_bytes
from launch.store.episodes import Episode
from launch.store.rlds_format import (
  DATASET_INFO_FILE,
  DEFAULT_DATASET_NAME,
  FEATURES_FIELD,
  FEATURES_FILE,
  FILEPATH_TEMPLATE,
  FLAGS,
  METADATA_KEY,
  SPLIT,
  VERSION,
  EpisodeSpec,
  Field,
  PathLike,
  RldsError,
  check_dtype,
  fields_for,
)

_TFDS = 'tensorflow_datasets.core.features.'
_FEATURES_DICT = _TFDS + 'features_dict.FeaturesDict'
_DATASET = _TFDS + 'dataset_feature.Dataset'
_TENSOR = _TFDS + 'tensor_feature.Tensor'
_SCALAR = _TFDS + 'scalar.Scalar'
_TEXT = _TFDS + 'text_feature.Text'

_NAME_RE = re.compile(r'^[a-z][a-z0-9_]*$')

_DESCRIPTIONS = {
  'observation': 'Observation before the action; the final one on the last step.',
  'observation_features': 'State features beside the camera image of the observation.',
  'action': 'Action taken after the observation; zeros on the last step.',
  'reward': 'Reward following the action; 0 on the last step.',
  'discount': 'Discount following the action (0: terminal); 0 on the last step.',
  'is_first': 'True on the first step of the episode.',
  'is_last': 'True on the last step of the episode.',
  'is_terminal': 'True on the last step if the episode ended in a terminal state.',
}


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


def _step_feature(values: np.ndarray, field: Field) -> tf.train.Feature:
  """One step field, stacked over steps, as TFDS encodes a Sequence of Tensor."""
  if field.encoding == 'zlib':  # camera images; one byte a value, no byte order
    return tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[zlib.compress(s.tobytes(), 1) for s in values])
    )
  if field.encoding == 'bytes':
    little = values.astype(field.dtype.newbyteorder('<'), copy=False)
    return tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[step.tobytes() for step in little])
    )
  if field.list_kind == 'float_list':
    return tf.train.Feature(float_list=tf.train.FloatList(value=values.ravel().tolist()))
  return tf.train.Feature(
    int64_list=tf.train.Int64List(value=values.astype(np.int64).ravel().tolist())
  )


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
  named = [('observations', obs), ('actions', act), ('rewards', rew), ('discounts', disc)]
  if episode.observation_features is not None:
    features = np.asarray(episode.observation_features)
    if features.ndim != 2 or features.shape[0] != steps + 1:
      raise fail(f'observation_features have shape {features.shape}, expected [T+1={steps + 1}, F]')
    named.append(('observation_features', features))
  for name, arr in named:
    problem = check_dtype(arr.dtype)
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


def _episode_example(episode: Episode, fields: Dict[str, Field], metadata: str) -> tf.train.Example:
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
  if episode.observation_features is not None:
    values[FEATURES_FIELD] = np.asarray(episode.observation_features)
  feature = {f'steps/{name}': _step_feature(values[name], field) for name, field in fields.items()}
  feature[METADATA_KEY] = tf.train.Feature(
    bytes_list=tf.train.BytesList(value=[metadata.encode('utf-8')])
  )
  return tf.train.Example(features=tf.train.Features(feature=feature))


def _features_json(fields: Dict[str, Field]) -> Dict[str, Any]:
  def tensor(name: str, field: Field) -> Dict[str, Any]:
    shape = {'dimensions': [str(d) for d in field.shape]} if field.shape else {}
    return {
      'pythonClassName': _SCALAR if name in FLAGS else _TENSOR,
      'tensor': {'shape': shape, 'dtype': field.dtype.name, 'encoding': field.encoding},
      'description': _DESCRIPTIONS[name],
    }

  return {
    'pythonClassName': _FEATURES_DICT,
    'featuresDict': {
      'features': {
        'steps': {
          'pythonClassName': _DATASET,
          'sequence': {
            'feature': {
              'pythonClassName': _FEATURES_DICT,
              'featuresDict': {
                'features': {name: tensor(name, field) for name, field in fields.items()}
              },
            },
            'length': '-1',
          },
        },
        'episode_metadata': {
          'pythonClassName': _FEATURES_DICT,
          'featuresDict': {
            'features': {
              METADATA_KEY.split('/')[1]: {
                'pythonClassName': _TEXT,
                'text': {},
                'description': 'The episode metadata, a JSON object.',
              }
            }
          },
        },
      }
    },
  }


def _shard_name(name: str, index: int, num_shards: int) -> str:
  return FILEPATH_TEMPLATE.format(
    DATASET=name,
    SPLIT=SPLIT,
    FILEFORMAT='tfrecord',
    SHARD_X_OF_Y=f'{index:05d}-of-{num_shards:05d}',
  )


def _write_json(path: pathlib.Path, doc: Dict[str, Any]) -> None:
  atomic_write_bytes(path, (json.dumps(doc, indent=2) + '\n').encode('utf-8'))


def export_rlds(
  episodes: Iterable[Episode],
  out_dir: PathLike,
  dataset_name: str = DEFAULT_DATASET_NAME,
  shard_size: int = 100,
  description: str = '',
) -> ExportSummary:
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
    raise ConfigError(
      f'dataset_name {dataset_name!r} must be snake_case '
      '(lowercase letters, digits, underscores; a letter first)'
    )
  if shard_size < 1:
    raise ConfigError(f'shard_size must be at least 1, got {shard_size}')
  out = pathlib.Path(out_dir)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise RldsError(f'{out} already exists and is not an empty directory; export into a new one')
  created_dir = not out.exists()
  out.mkdir(parents=True, exist_ok=True)

  written: List[pathlib.Path] = []  # to remove if the export fails
  lengths: List[int] = []
  spec: Optional[EpisodeSpec] = None
  fields: Dict[str, Field] = {}
  num_steps = 0
  writer = None
  try:
    for index, episode in enumerate(episodes):
      episode_spec, metadata = _prepare(episode, index)
      if spec is None:
        spec, fields = episode_spec, fields_for(episode_spec)
      elif episode_spec != spec:
        raise RldsError(
          f'episode {index} of the export has {episode_spec.describe()}; '
          f'episode 0 has {spec.describe()} (one dataset, one spec)'
        )
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
    _write_json(
      out / DATASET_INFO_FILE,
      {
        'name': dataset_name,
        'description': description or 'Episodes exported from a Collect & Infer store (RLDS).',
        'version': VERSION,
        'fileFormat': 'tfrecord',
        'citation': '',
        'splits': [
          {
            'name': SPLIT,
            'filepathTemplate': FILEPATH_TEMPLATE,
            'numBytes': str(num_bytes),
            'shardLengths': [str(n) for n in lengths],
          }
        ],
      },
    )
  except BaseException:
    if writer is not None:
      writer.close()
    for path in written:
      path.unlink(missing_ok=True)
    if created_dir and not any(out.iterdir()):
      out.rmdir()
    raise
  return ExportSummary(
    directory=out,
    dataset_name=dataset_name,
    spec=spec,
    num_episodes=sum(lengths),
    num_steps=num_steps,
    shard_files=tuple(names),
    shard_lengths=tuple(lengths),
    num_bytes=num_bytes,
  )
