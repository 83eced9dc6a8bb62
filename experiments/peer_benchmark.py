"""Peer benchmark: this project's default learner against SAC (sbx-rl), same wall-clock budget.

  python -m experiments.peer_benchmark --tasks cartpole:swingup --minutes 15 \\
      --out bench_out/peer
  python -m experiments.peer_benchmark --tasks walker:walk,cheetah:run --minutes 45 \\
      --out bench_out/peer

For each task, one after another on this machine (never at the same time):
  * collect_infer: `python -m experiments.collect_infer` exactly as `make run` starts it
    (default preset and actors), with a wall-clock budget and an evaluation every minute;
  * sac: experiments/peer_sac.py, sbx-rl's SAC with its defaults (one update of batch 256
    per environment step), in its own virtual environment under <out>/sac_venv, created on
    first use with a newer Python (sbx-rl needs one) and the project's dm_control and MuJoCo
    pins, so both see the same physics. Nothing of it enters the project's constraints.
Both evaluate 5 deterministic episodes about every 60 s. Both clocks start when the
benchmark starts the run's process (imports and compilation count) and read the time the
evaluated policy was taken: SAC's clock stops while it evaluates (one process), ours
evaluates in its own node beside the actors and the learner.

Writes:
  <out>/peer.csv     task, agent, elapsed_s, env_steps, mean_return: every evaluation
  <out>/ratios.csv   task, fraction, threshold, ours_s, sac_s, ratio: for fractions of SAC's
                     best return, the wall-clock seconds each first reached it, and ours/sac
                     (the target: <= 1.0 at 0.8)
  <out>/<task>.png   return vs wall-clock and vs environment steps, both agents
A finished run (its `done` marker) is skipped when the command is rerun; an unfinished
one starts again from scratch.

Tuning ours against the same SAC run: `--ours_args "--agent num_samples=10"` adds
collect_infer arguments to our run (its settings are in its config.json); with another
--out that holds SAC's finished run, `--agents collect_infer` runs ours alone. A finished
run of ours made with other --ours_args is refused, not mixed up.
"""

import argparse
import csv
import math
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SBX_VERSION = '0.28.0'
PINNED = ('dm_control', 'mujoco')  # taken from constraints.txt: same physics for both
FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
AGENTS = ('collect_infer', 'sac')
PEER_FIELDS = ('task', 'agent', 'elapsed_s', 'env_steps', 'mean_return')
RATIO_FIELDS = ('task', 'fraction', 'threshold', 'ours_s', 'sac_s', 'ratio')


def parse_args(argv):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--tasks', default='cartpole:swingup', help='comma-separated dm_control tasks')
  p.add_argument('--minutes', type=float, default=15.0, help='wall-clock budget per run')
  p.add_argument('--out', default='bench_out/peer')
  p.add_argument('--agents', default=','.join(AGENTS), help='which of collect_infer,sac to run')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument(
    '--ours_args',
    default='',
    help='extra collect_infer arguments for our run, e.g. "--agent num_samples=10" '
    '(default: none, the learner as `make run` starts it)',
  )
  p.add_argument('--eval_every_seconds', type=float, default=60.0)
  p.add_argument(
    '--sac_python',
    default=None,
    help='interpreter for the SAC environment (default: the newest python3.12/3.11 found)',
  )
  args = p.parse_args(argv)
  args.tasks = [t for t in args.tasks.split(',') if t]
  args.agents = [a for a in args.agents.split(',') if a]
  bad = sorted(set(args.agents) - set(AGENTS))
  if bad:
    p.error(f'--agents: unknown {bad}; choose from {list(AGENTS)}')
  if not args.tasks or args.minutes <= 0:
    p.error('--tasks needs a task and --minutes a positive number')
  return args


# --- the SAC environment ------------------------------------------------------------


def find_newer_python(given: Optional[str]) -> str:
  """An interpreter of Python 3.11 or 3.12 (sbx-rl's jax needs >= 3.11)."""
  candidates = [given] if given else []
  candidates += [shutil.which(n) for n in ('python3.12', 'python3.11')]
  pyenv = pathlib.Path.home() / '.pyenv' / 'versions'
  candidates += sorted((str(p) for p in pyenv.glob('3.1[12].*/bin/python')), reverse=True)
  for c in candidates:
    if not c or not os.access(c, os.X_OK):
      continue
    ok = subprocess.run(
      [c, '-c', 'import sys, venv; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))'],
      capture_output=True,
    )
    if ok.returncode == 0:
      return c
  raise SystemExit(
    'error: SAC (sbx-rl) needs Python 3.11 or 3.12 with venv; none found on PATH or in '
    '~/.pyenv/versions. Give one with --sac_python.'
  )


def pins(constraints: pathlib.Path = ROOT / 'constraints.txt') -> List[str]:
  """The project's `name==version` lines for the packages both agents must share."""
  found = {}
  for line in constraints.read_text().splitlines():
    name, _, version = line.split('#')[0].strip().partition('==')
    key = name.strip().lower().replace('-', '_')
    if key in PINNED and version:
      found[key] = f'{name.strip()}=={version.strip()}'
  missing = [p for p in PINNED if p not in found]
  if missing:
    raise SystemExit(f'error: {constraints} pins no version of {missing}')
  return [found[p] for p in PINNED]


def sac_venv(out: pathlib.Path, python: Optional[str]) -> pathlib.Path:
  """<out>/sac_venv/bin/python, created with sbx-rl on first use."""
  venv = out / 'sac_venv'
  exe = venv / 'bin' / 'python'
  stamp = venv / '.installed'
  if stamp.exists():
    return exe
  base = find_newer_python(python)
  print(f'[peer] creating {venv} with {base} (sbx-rl {SBX_VERSION}, {pins()})', flush=True)
  shutil.rmtree(venv, ignore_errors=True)
  subprocess.run([base, '-m', 'venv', str(venv)], check=True)
  subprocess.run(
    [str(exe), '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
     f'sbx-rl=={SBX_VERSION}', *pins()],
    check=True,
  )  # fmt: skip
  freeze = subprocess.run([str(exe), '-m', 'pip', 'freeze'], capture_output=True, text=True)
  (out / 'sac_venv_freeze.txt').write_text(freeze.stdout)
  stamp.touch()
  return exe


# --- runs -----------------------------------------------------------------------------


def task_slug(task: str) -> str:
  return task.replace(':', '_')


def command(agent: str, task: str, run_dir: pathlib.Path, args, t0: float, sac_python=None):
  """The command line of one run."""
  seconds = args.minutes * 60.0
  if agent == 'sac':
    return [
      str(sac_python), str(ROOT / 'experiments' / 'peer_sac.py'),
      '--task', task, '--seconds', f'{seconds:g}', '--out', str(run_dir),
      '--t0', repr(t0), '--seed', str(args.seed),
      '--eval_every', f'{args.eval_every_seconds:g}',
    ]  # fmt: skip
  return [
    sys.executable, '-m', 'experiments.collect_infer',
    '--task', task, '--run_dir', str(run_dir), '--seed', str(args.seed),
    '--max_seconds', f'{seconds:g}', '--max_actor_steps', str(10**9),
    '--eval_every_seconds', f'{args.eval_every_seconds:g}',
  ] + shlex.split(args.ours_args)  # fmt: skip


def run(agent: str, task: str, run_dir: pathlib.Path, args, sac_python=None) -> int:
  ours_args = run_dir.parent / f'{agent}.args'
  if agent == 'collect_infer' and (run_dir / 'done').exists():
    before = ours_args.read_text() if ours_args.exists() else ''
    if before != args.ours_args:
      raise SystemExit(
        f'[peer] {run_dir} finished with --ours_args {before!r}, not {args.ours_args!r}: '
        'give this variant another --out'
      )
  if (run_dir / 'done').exists():
    print(f'[peer] {task} {agent}: finished before in {run_dir}; skipped', flush=True)
    return 0
  shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts again
  run_dir.parent.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  (run_dir.parent / f'{agent}.t0').write_text(repr(t0))
  if agent == 'collect_infer':
    ours_args.write_text(args.ours_args)
  cmd = command(agent, task, run_dir, args, t0, sac_python)
  print(f'[peer] {task} {agent}: {args.minutes:g} min -> {run_dir}', flush=True)
  log = run_dir.parent / f'{agent}.log'
  with open(log, 'w') as f:
    code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
  if code == 0:
    (run_dir / 'done').write_text(f'{time.time() - t0:.1f}\n')
  else:
    print(f'[peer] {task} {agent}: exited {code}; see {log}', file=sys.stderr, flush=True)
  return code


# --- results --------------------------------------------------------------------------


def _read(path: pathlib.Path) -> List[Dict[str, str]]:
  try:
    with open(path, newline='') as f:
      return list(csv.DictReader(f))
  except FileNotFoundError:
    return []


def evaluations(agent: str, task_dir: pathlib.Path) -> Dict[str, np.ndarray]:
  """elapsed_s, env_steps and mean_return of one run's evaluations, seconds from its start."""
  run_dir = task_dir / agent
  if agent == 'sac':
    rows = _read(run_dir / 'evaluations.csv')
    cols = {k: [float(r[k]) for r in rows] for k in ('elapsed_s', 'env_steps', 'mean_return')}
  else:
    from experiments.plot_run import read_csv

    ev = read_csv(run_dir / 'logs' / 'evaluator' / 'logs.csv')
    t0 = float((task_dir / f'{agent}.t0').read_text()) if ev else 0.0
    cols = {
      'elapsed_s': list(ev.get('started_at', []) - t0) if ev else [],
      'env_steps': list(ev.get('actor_steps', [])),
      'mean_return': list(ev.get('mean_return', [])),
    }
  return {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}


def first_time(elapsed: np.ndarray, returns: np.ndarray, threshold: float) -> float:
  """Seconds of the first evaluation at or above `threshold` (nan: never)."""
  hits = np.flatnonzero(np.isfinite(returns) & (returns >= threshold))
  return float(elapsed[hits[0]]) if len(hits) else math.nan


def ratios(
  task: str, ours: Dict[str, np.ndarray], sac: Dict[str, np.ndarray], fractions=FRACTIONS
) -> List[Dict[str, object]]:
  """Per fraction of SAC's best return: when each agent first reached it, and ours / SAC's."""
  if not len(sac['mean_return']) or not np.isfinite(sac['mean_return']).any():
    return []
  best = float(np.nanmax(sac['mean_return']))
  rows = []
  for f in fractions:
    threshold = f * best
    ours_s = first_time(ours['elapsed_s'], ours['mean_return'], threshold)
    sac_s = first_time(sac['elapsed_s'], sac['mean_return'], threshold)
    rows.append(
      {
        'task': task,
        'fraction': f,
        'threshold': threshold,
        'ours_s': ours_s,
        'sac_s': sac_s,
        'ratio': ours_s / sac_s if sac_s > 0 else math.nan,
      }
    )
  return rows


def _cell(v) -> str:
  if isinstance(v, float):
    return '' if not math.isfinite(v) else f'{v:.6g}'
  return str(v)


def write_csv(path: pathlib.Path, fields: Sequence[str], rows) -> pathlib.Path:
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(fields))
    w.writeheader()
    for r in rows:
      w.writerow({k: _cell(r[k]) for k in fields})
  return path


def plot(
  task: str, runs: Dict[str, Dict[str, np.ndarray]], threshold, path, ours: str = ''
) -> pathlib.Path:
  from experiments.plot_run import new_figure, save

  fig, (ax_time, ax_steps) = new_figure(ncols=2)
  for agent, ev in runs.items():
    if len(ev['mean_return']):
      ax_time.plot(ev['elapsed_s'] / 60.0, ev['mean_return'], marker='o', markersize=3, label=agent)
      ax_steps.plot(ev['env_steps'], ev['mean_return'], marker='o', markersize=3, label=agent)
  for ax, xlabel in ((ax_time, 'wall-clock minutes'), (ax_steps, 'environment steps')):
    if threshold is not None:
      ax.axhline(threshold, color='k', ls='--', lw=1, label="80% of SAC's best")
    ax.set(xlabel=xlabel, ylabel='evaluation return (5 deterministic episodes)')
    ax.set_xlim(left=0)
    ax.legend(loc='best')
  fig.suptitle(
    f'{task}: collect_infer ({ours or "default"}) vs SAC (sbx-rl), same wall-clock budget'
  )
  return save(fig, path)


def collect(tasks: Sequence[str], out: pathlib.Path) -> List[pathlib.Path]:
  peer, ratio_rows, paths = [], [], []
  for task in tasks:
    task_dir = out / task_slug(task)
    runs = {a: evaluations(a, task_dir) for a in AGENTS}
    for agent, ev in runs.items():
      peer += [
        {'task': task, 'agent': agent, 'elapsed_s': t, 'env_steps': s, 'mean_return': r}
        for t, s, r in zip(ev['elapsed_s'], ev['env_steps'], ev['mean_return'])
      ]
    rows = ratios(task, runs['collect_infer'], runs['sac'])
    ratio_rows += rows
    at80 = next((r['threshold'] for r in rows if r['fraction'] == 0.8), None)
    args_file = task_dir / 'collect_infer.args'
    ours = args_file.read_text() if args_file.exists() else ''
    paths.append(plot(task, runs, at80, out / f'{task_slug(task)}.png', ours))
    for r in rows:
      print(
        f'{task}: {r["fraction"]:.0%} of SAC best ({r["threshold"]:.1f}): ours '
        f'{r["ours_s"]:.0f} s, SAC {r["sac_s"]:.0f} s, ratio {r["ratio"]:.2f}'
      )
  paths.insert(0, write_csv(out / 'ratios.csv', RATIO_FIELDS, ratio_rows))
  paths.insert(0, write_csv(out / 'peer.csv', PEER_FIELDS, peer))
  return paths


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  out = pathlib.Path(args.out).resolve()
  out.mkdir(parents=True, exist_ok=True)
  sac_python = sac_venv(out, args.sac_python) if 'sac' in args.agents else None
  status = 0
  try:
    for task in args.tasks:
      for agent in args.agents:
        code = run(agent, task, out / task_slug(task) / agent, args, sac_python)
        status = status or code
  except KeyboardInterrupt:
    print('\n[peer] interrupted: tabulating the runs so far', flush=True)
    status = 130
  for path in collect(args.tasks, out):
    print(f'wrote {path}')
  return status


if __name__ == '__main__':
  sys.exit(main())
