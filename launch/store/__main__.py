"""Episode store commands: what a store holds, RLDS export and import, checks and quarantine.

  python -m launch.store info runs/cartpole/store
  python -m launch.store export runs/cartpole/store exports/cartpole_rlds
  python -m launch.store import exports/cartpole_rlds datasets/cartpole --on_error skip
  python -m launch.store check runs/cartpole/store
  python -m launch.store quarantine runs/cartpole/store robot_0-00000012 --reason 'camera unplugged'
  python -m launch.store delete runs/cartpole/store robot_0-00000012 --yes

An imported dataset is an episode store: train on it with
`python -m experiments.collect_infer --mode offline --datasets datasets/cartpole ...`.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def _info(args) -> int:
  from launch.store.episodes import EpisodeStore

  if not os.path.isdir(args.store):
    raise _error(f'{args.store} is not a directory')
  store = EpisodeStore(args.store)
  infos = store.index()
  print(f'{args.store}: {len(infos)} episodes, {store.num_steps} steps')
  by_source = {}
  for info in infos:
    by_source.setdefault(info.metadata.get('source', info.writer), []).append(info.episode_return)
  for source, returns in sorted(by_source.items()):
    print(
      f'  {source}: {len(returns)} episodes, mean return {sum(returns) / len(returns):.1f}, '
      f'min {min(returns):.1f}, max {max(returns):.1f}'
    )
  return 0


def _export(args) -> int:
  from launch.store.episodes import EpisodeStore
  from launch.store.rlds_export import export_rlds

  if not os.path.isdir(args.store):
    raise _error(f'{args.store} is not a directory')
  store = EpisodeStore(args.store)
  summary = export_rlds(iter(store), args.out, dataset_name=args.name)
  print(
    f'exported {summary.num_episodes} episodes ({summary.num_steps} steps) to {args.out} '
    f'in {len(summary.shard_files)} shard(s)'
  )
  return 0


def _import(args) -> int:
  from launch.store.rlds_import import import_into_store

  if not 0 < args.max_episode_mb <= 1 << 20:  # Up to 1 TiB; also refuses nan.
    raise _error(f'--max_episode_mb must be in (0, 1048576], got {args.max_episode_mb}')
  try:
    report = import_into_store(
      args.rlds_dir,
      args.store,
      writer=args.writer,
      on_error=args.on_error,
      max_episode_bytes=int(args.max_episode_mb * (1 << 20)),
    )
  except OSError as e:  # An unreadable dataset file: one line, not a traceback.
    raise _error(
      f'{e.filename or args.rlds_dir}: {e.strerror or e}; nothing was imported'
    ) from None
  print(report.summary())
  return 0


def _open_store(path: str):
  from launch.store.episodes import EpisodeStore

  if not os.path.isdir(path):
    raise _error(f'{path} is not a directory')
  return EpisodeStore(path)


def _check(args) -> int:
  import logging

  from agents.common.logs import get_logger

  # The report names every problem; the store's own warnings would say it twice.
  get_logger('store').setLevel(logging.ERROR)
  problems = _open_store(args.store).check()
  bad = [p for p in problems if p.status == 'bad']
  for problem in problems:
    print(f'  {problem.status:<11} {problem.what}  {problem.file}: {problem.reason}')
  handled = sum(p.status in ('quarantined', 'deleted') for p in problems)
  print(f'{args.store}: {len(bad)} bad record(s), {handled} quarantined or deleted')
  if bad:
    print(
      'look at them, then `quarantine STORE ID --reason ...` (kept, never trained on) or '
      '`delete STORE ID --yes`',
      file=sys.stderr,
    )
  return 1 if bad else 0


def _known_id(store, episode_id: str):
  try:
    return store.info(episode_id)
  except KeyError:
    raise _error(f'{store.directory} has no episode {episode_id!r}') from None


def _quarantine(args) -> int:
  store = _open_store(args.store)
  info = _known_id(store, args.id)
  if args.id in store.quarantined():
    print(f'{args.id} is already quarantined ({store.quarantined()[args.id]})')
    return 0
  store.quarantine(args.id, args.reason)
  print(f'quarantined {args.id} ({info.segment}): {args.reason}')
  return 0


def _delete(args) -> int:
  store = _open_store(args.store)
  info = _known_id(store, args.id)
  if not args.yes:
    raise _error(
      f'delete removes episode {args.id} for good (its bytes are zeroed); '
      'add --yes to confirm, or quarantine it instead'
    )
  store.delete(args.id, args.reason)
  print(f'deleted {args.id} ({info.size} bytes at {info.segment}:{info.offset} zeroed)')
  return 0


def _error(message: str):
  from agents.common.errors import UserError

  return UserError(message)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
    prog='python -m launch.store',
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = p.add_subparsers(dest='command', required=True)
  info = sub.add_parser('info', help='episodes, steps and returns per source')
  info.add_argument('store')
  exp = sub.add_parser('export', help='write a store as an RLDS (TFDS layout) dataset')
  exp.add_argument('store')
  exp.add_argument('out', help='a new or empty directory')
  exp.add_argument('--name', default='collect_infer_episodes', help='dataset name')
  imp = sub.add_parser('import', help='read an RLDS dataset into a store')
  imp.add_argument('rlds_dir')
  imp.add_argument('store', help='the store to append to (created if missing)')
  imp.add_argument(
    '--on_error',
    choices=['skip', 'refuse'],
    default='refuse',
    help='a bad record: skip it (and say so) or refuse the whole import',
  )
  imp.add_argument(
    '--writer',
    default='import',
    help='writer name prefix inside the store (each import adds <writer>-<time>-<random>)',
  )
  imp.add_argument(
    '--max_episode_mb',
    type=float,
    default=512,
    help='the largest episode accepted, as a record and decoded (MiB)',
  )
  chk = sub.add_parser(
    'check', help='read every record back and report each bad one (exit 1 if any)'
  )
  chk.add_argument('store')
  qua = sub.add_parser('quarantine', help='hide an episode from training for good (kept on disk)')
  qua.add_argument('store')
  qua.add_argument('id', help='episode id, as `check` or `info` prints it')
  qua.add_argument('--reason', required=True, help='why (kept in the quarantine log)')
  dele = sub.add_parser('delete', help="zero an episode's bytes and hide it for good")
  dele.add_argument('store')
  dele.add_argument('id', help='episode id')
  dele.add_argument('--yes', action='store_true', help='confirm: this cannot be undone')
  dele.add_argument('--reason', default='deleted by hand', help='why (kept in the log)')
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  from agents.common.errors import UserError

  try:
    commands = {'info': _info, 'export': _export, 'import': _import}
    commands.update(check=_check, quarantine=_quarantine, delete=_delete)
    return commands[args.command](args)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
