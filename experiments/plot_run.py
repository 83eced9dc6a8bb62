"""Plots a run directory's CSV logs as PNGs.

  python -m experiments.plot_run runs/cartpole_swingup [--out DIR]

Reads <run>/logs/{evaluator,learner,actor_<i>,replay}/logs.csv (see launch/logs.py) and
writes to DIR (default <run>/plots):
  eval_vs_steps.png   evaluation return (mean, min-max band) vs environment steps
  eval_vs_time.png    evaluation return vs wall-clock seconds (summed over resumes)
  learner.png         critic and policy loss, temperature (log scale) vs learner steps
  throughput.png      per-actor env steps/s, and program-wide env / learner steps/s
  replay.png          per replay table: size, inserts and samples per second, and the
                      rate limiter's cumulative waits vs wall-clock seconds
  contact_sheet.png   evenly spaced frames of the latest evaluation video
                      (<run>/videos/step_<learner step>.gif), in time order
Each plot is skipped when its logs (or videos) are missing.
"""

import argparse
import csv
import math
import pathlib
import sys
from typing import Dict, List, Optional

import numpy as np

from launch.csv_log import is_header

Columns = Dict[str, np.ndarray]


class NoLogsError(Exception):
  """The run directory has no CSV logs to plot."""


# --- reading ------------------------------------------------------------------


def _number(cell: str) -> float:
  try:
    return float(cell)
  except ValueError:
    return math.nan


def read_csv(path) -> Columns:
  """Reads an acme CSV log into {column: float array}; {} if the file is missing or empty.

  Tolerant of logs appended by resumed runs: a repeated header row is skipped (a
  different header switches the column names from there on), rows whose length
  does not match the header (e.g. a line cut short by a crash) are dropped, and
  non-numeric cells become NaN.
  """
  try:
    with open(path, newline='') as f:
      rows = [r for r in csv.reader(f) if r]
  except FileNotFoundError:
    return {}
  if not rows:
    return {}
  names: List[str] = []
  header: List[str] = []
  records: List[Dict[str, float]] = []
  for row in rows:
    if is_header(row):
      header = [c.strip() for c in row]
      names += [n for n in header if n not in names]
    elif header and len(row) == len(header):
      records.append({n: _number(c) for n, c in zip(header, row)})
  return {n: np.array([r.get(n, math.nan) for r in records], dtype=np.float64) for n in names}


def wall_clock(elapsed: np.ndarray) -> np.ndarray:
  """Cumulative wall-clock seconds from per-launch `elapsed_s` (it restarts at 0 on resume)."""
  elapsed = np.asarray(elapsed, dtype=np.float64)
  out = elapsed.copy()
  offset = 0.0
  for i in range(1, len(elapsed)):
    if elapsed[i] < elapsed[i - 1]:
      offset = out[i - 1]
    out[i] = elapsed[i] + offset
  return out


def read_run(run_dir) -> Dict[str, Columns]:
  """{'evaluator': ..., 'learner': ..., 'replay': ..., 'actor_0': ...} for the logs that have
  rows."""
  logs = pathlib.Path(run_dir) / 'logs'
  labels = ['evaluator', 'learner', 'replay'] + sorted(
    (p.name for p in logs.glob('actor_*') if p.is_dir()), key=lambda n: (len(n), n)
  )
  found = {label: read_csv(logs / label / 'logs.csv') for label in labels}
  return {label: cols for label, cols in found.items() if cols and len(next(iter(cols.values())))}


# --- plotting -----------------------------------------------------------------


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0, nrows: int = 1):
  """A (figure, axes list, row by row) drawn by matplotlib's Agg backend, without pyplot's
  global state; `width` and `height` are each panel's."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError:
    raise SystemExit("error: plotting needs matplotlib: pip install -e '.[bench]'") from None
  fig = Figure(figsize=(width * ncols, height * nrows), layout='constrained')
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
  for ax in axes:
    ax.grid(True, alpha=0.3)
  return fig, list(axes)


def save(fig, path: pathlib.Path) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  return path


def _has(cols: Columns, *names: str) -> bool:
  return all(n in cols and np.isfinite(cols[n]).any() for n in names)


def _plot_eval(ev: Columns, x_key: str, xlabel: str, path: pathlib.Path, title: str):
  fig, (ax,) = new_figure()
  x = wall_clock(ev['elapsed_s']) if x_key == 'elapsed_s' else ev[x_key]
  if _has(ev, 'min_return', 'max_return'):
    ax.fill_between(x, ev['min_return'], ev['max_return'], alpha=0.2, label='min-max')
  ax.plot(x, ev['mean_return'], marker='o', markersize=3, label='mean return')
  ax.set(xlabel=xlabel, ylabel='evaluation return', title=title)
  ax.set_xlim(left=0)
  ax.legend(loc='best')
  return save(fig, path)


def _plot_learner(lr: Columns, path: pathlib.Path, title: str) -> Optional[pathlib.Path]:
  keys = [k for k in ('critic_loss', 'policy_loss', 'temperature') if _has(lr, k)]
  if not keys or not _has(lr, 'learner_steps'):
    return None
  fig, axes = new_figure(ncols=len(keys), width=4.5)
  for ax, key in zip(axes, keys):
    y = lr[key]
    ax.plot(lr['learner_steps'], y)
    if key == 'temperature' and np.nanmin(y) > 0:
      ax.set_yscale('log')
    ax.set(xlabel='learner steps', title=key)
  fig.suptitle(title)
  return save(fig, path)


def _actor_time(actor: Columns) -> np.ndarray:
  """Seconds spent in episodes so far: the actor loop runs episodes back to back."""
  return np.nancumsum(actor['episode_length'] / actor['steps_per_second'])


def _rates(ev: Columns, key: str):
  t = wall_clock(ev['elapsed_s'])
  dt, dn = np.diff(t), np.diff(ev[key])
  ok = (dt > 0) & (dn >= 0)
  return t[1:][ok], dn[ok] / dt[ok]


def _plot_throughput(
  run: Dict[str, Columns], path: pathlib.Path, title: str
) -> Optional[pathlib.Path]:
  actors = {
    k: v
    for k, v in run.items()
    if k.startswith('actor_') and _has(v, 'steps_per_second', 'episode_length')
  }
  ev = run.get('evaluator', {})
  rates = [
    k
    for k in ('actor_steps', 'learner_steps')
    if _has(ev, 'elapsed_s', k) and len(_rates(ev, k)[0])
  ]
  if not actors and not rates:
    return None
  fig, axes = new_figure(ncols=int(bool(actors)) + int(bool(rates)))
  if actors:
    ax = axes[0]
    for label, cols in actors.items():
      ax.plot(_actor_time(cols), cols['steps_per_second'], label=label)
    ax.set(
      xlabel='seconds in episodes (per actor)', ylabel='env steps / s', title='per-actor throughput'
    )
    ax.legend(loc='best')
  if rates:
    ax = axes[-1]
    for key in rates:
      ax.plot(
        *_rates(ev, key), marker='o', markersize=3, label=key.replace('_steps', ' steps') + ' / s'
      )
    ax.set(xlabel='wall-clock seconds', ylabel='steps / s', title='program throughput')
    ax.legend(loc='best')
  fig.suptitle(title)
  return save(fig, path)


def _plot_replay(rp: Columns, path: pathlib.Path, title: str) -> Optional[pathlib.Path]:
  """The replay node's '<table>/<figure>' columns (launch.replay_node.table_metrics)."""
  tables = sorted({k.rsplit('/', 1)[0] for k in rp if k.endswith('/size')})
  if not tables or not _has(rp, 'elapsed_s'):
    return None
  t = wall_clock(rp['elapsed_s'])
  panels = [
    ('items', 'table size', [('size', '{table}')]),
    # Log scale: samples run samples_per_insert (e.g. 32) times above inserts.
    (
      'per second (log)',
      'inserts and samples',
      [('inserts_per_s', '{table} inserts'), ('samples_per_s', '{table} samples')],
    ),
    (
      'cumulative seconds',
      'rate limiter waits',
      [('insert_wait_s', '{table} inserts'), ('sample_wait_s', '{table} samples')],
    ),
  ]
  fig, axes = new_figure(ncols=len(panels), width=4.5)
  for ax, (ylabel, panel_title, figures) in zip(axes, panels):
    for table in tables:
      for figure, label in figures:
        if _has(rp, f'{table}/{figure}'):
          ax.plot(t, rp[f'{table}/{figure}'], label=label.format(table=table))
    if ylabel.endswith('(log)') and any(
      np.nanmax(line.get_ydata(), initial=0) > 0 for line in ax.get_lines()
    ):
      ax.set_yscale('log')  # Zero rates (an idle table) drop out.
    ax.set(xlabel='wall-clock seconds (replay)', ylabel=ylabel, title=panel_title)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(loc='best', fontsize='small')
  fig.suptitle(title)
  return save(fig, path)


def latest_video(run_dir) -> Optional[pathlib.Path]:
  """The evaluator's video of the highest learner step, or None."""
  videos = [
    (int(p.stem.split('_', 1)[1]), p)
    for p in pathlib.Path(run_dir, 'videos').glob('step_*.gif')
    if p.stem.split('_', 1)[1].isdigit()
  ]
  return max(videos)[1] if videos else None


def sheet_frames(count: int, frames: int) -> List[int]:
  """Indices of up to `frames` evenly spaced frames of `count`, the first and last included."""
  return sorted(set(np.linspace(0, count - 1, min(frames, count)).round().astype(int).tolist()))


def contact_sheet(video: pathlib.Path, path: pathlib.Path, frames: int = 12, columns: int = 6):
  """`frames` evenly spaced frames of a GIF (first and last included), tiled `columns` to a
  row in time order, each titled with its frame index; returns `path`, or None when the GIF
  does not read (a damaged or half-written file)."""
  from PIL import Image, UnidentifiedImageError

  try:
    with Image.open(video) as gif:
      count = getattr(gif, 'n_frames', 1)
      chosen = sheet_frames(count, frames)
      images = []
      for index in chosen:
        gif.seek(index)
        images.append(np.asarray(gif.convert('RGB')))
  except (OSError, UnidentifiedImageError, EOFError) as e:
    print(f'warning: skipping the contact sheet: {video} does not read ({e})', file=sys.stderr)
    return None
  columns = min(columns, len(images))
  rows = math.ceil(len(images) / columns)
  fig, axes = new_figure(ncols=columns, width=1.6, height=1.8, nrows=rows)
  for ax in axes:
    ax.axis('off')
  for ax, index, image in zip(axes, chosen, images):
    ax.imshow(image)
    ax.set_title(f'frame {index}', fontsize=7)
  fig.suptitle(f'{video.name}: {len(images)} of {count} frames')
  return save(fig, path)


def plot_run(run_dir, out_dir=None) -> List[pathlib.Path]:
  """Writes the run's PNGs into out_dir (default <run_dir>/plots); returns their paths.

  Raises NoLogsError when the run directory has no CSV logs with rows.
  """
  run_dir = pathlib.Path(run_dir)
  out = pathlib.Path(out_dir) if out_dir is not None else run_dir / 'plots'
  run = read_run(run_dir)
  if not run:
    raise NoLogsError(
      f'no logs to plot: {run_dir / "logs"} has no evaluator, learner, '
      f'replay or actor_<i> logs.csv with rows'
    )
  title = run_dir.resolve().name
  written = []
  ev = run.get('evaluator', {})
  if _has(ev, 'mean_return', 'actor_steps'):
    written.append(
      _plot_eval(ev, 'actor_steps', 'environment steps', out / 'eval_vs_steps.png', title)
    )
  if _has(ev, 'mean_return', 'elapsed_s'):
    written.append(
      _plot_eval(ev, 'elapsed_s', 'wall-clock seconds', out / 'eval_vs_time.png', title)
    )
  written.append(_plot_learner(run.get('learner', {}), out / 'learner.png', title))
  written.append(_plot_throughput(run, out / 'throughput.png', title))
  written.append(_plot_replay(run.get('replay', {}), out / 'replay.png', title))
  video = latest_video(run_dir)
  if video is not None:
    written.append(contact_sheet(video, out / 'contact_sheet.png'))
  return [p for p in written if p is not None]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('run_dir', help='a run directory (the --run_dir of collect_infer)')
  p.add_argument('--out', default=None, help='output folder (default: RUN_DIR/plots)')
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    paths = plot_run(args.run_dir, args.out)
  except NoLogsError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for path in paths:
    print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
