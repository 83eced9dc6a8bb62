"""Timing each figure back to back with its ceiling, and writing the results.

Windows of `seconds`, interleaved over `repeats`, the ceiling timed before and after
each repeat (their mean is that repeat's ceiling); the median ratio is reported.
"""

import csv
import dataclasses
import math
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from experiments.plot_run import new_figure, save

# Issue 26: an actor of one environment at least half of bare stepping, one of K
# environments (actor_full_k{K}) at least 0.7, and the learner on the Reverb pipeline at
# least 0.9 of the same update on a batch in memory.
TARGETS = {'actor_full': 0.5, 'learner_pipeline': 0.9}
BATCHED_ACTOR_TARGET = 0.7


def target_of(figure: str) -> Optional[float]:
  """The figure's target ratio to its ceiling, if it has one."""
  if figure.startswith('actor_full_k'):
    return BATCHED_ACTOR_TARGET
  return TARGETS.get(figure)


FIGURE_FIELDS = (
  'benchmark',
  'preset',
  'figure',
  'unit',
  'value',
  'ceiling_figure',
  'ceiling',
  'ratio',
  'ratio_min',
  'ratio_max',
  'target',
  'meets_target',
  'repeats',
  'seconds',
  'load_1m',
)
SAMPLE_FIELDS = ('benchmark', 'preset', 'figure', 'repeat', 'value', 'ceiling', 'ratio', 'load_1m')

Rate = Callable[[], float]
Row = Dict[str, Any]


def load_1m() -> float:
  return float(os.getloadavg()[0])


def timed_rate(chunk: Callable[[], int], seconds: float, settle: float = 0.0) -> float:
  """Units/s of repeated `chunk()` calls (each returns the units it did) over >= `seconds`.

  `settle` seconds of untimed calls first drain what a background pipeline prefetched
  while something else was timed, so a window starts in steady state.
  """
  end = time.perf_counter() + settle
  while time.perf_counter() < end:
    chunk()
  units, start = 0, time.perf_counter()
  while True:
    units += chunk()
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return units / elapsed


@dataclasses.dataclass
class Series:
  """Per-repeat (value, ceiling) pairs of one figure."""

  figure: str
  unit: str
  ceiling_figure: str
  values: List[float] = dataclasses.field(default_factory=list)
  ceilings: List[float] = dataclasses.field(default_factory=list)
  loads: List[float] = dataclasses.field(default_factory=list)

  @property
  def ratios(self) -> List[float]:
    return [v / c for v, c in zip(self.values, self.ceilings)]


def interleave(ceiling: Rate, figures: Dict[str, Rate], repeats: int) -> Dict[str, List[float]]:
  """Times ceiling, figures..., ceiling, figures..., ceiling (`repeats` rounds).

  Returns {name: [rate per repeat]} with the ceiling of repeat i the mean of the
  ceilings timed just before and just after it, so load drifting during a round
  affects both sides alike.
  """
  out: Dict[str, List[float]] = {name: [] for name in figures}
  ceilings = [ceiling()]
  for _ in range(repeats):
    for name, rate in figures.items():
      out[name].append(rate())
    ceilings.append(ceiling())
  out['__ceiling__'] = [(a + b) / 2.0 for a, b in zip(ceilings, ceilings[1:])]
  return out


def figure_rows(
  benchmark: str, preset: str, series: Sequence[Series], seconds: float
) -> Tuple[List[Row], List[Row]]:
  """(figure rows, sample rows): medians per figure, and every repeat."""
  rows, samples = [], []
  for s in series:
    ratios = s.ratios
    target = target_of(s.figure)
    ratio = statistics.median(ratios)
    rows.append(
      {
        'benchmark': benchmark,
        'preset': preset,
        'figure': s.figure,
        'unit': s.unit,
        'value': statistics.median(s.values),
        'ceiling_figure': s.ceiling_figure,
        'ceiling': statistics.median(s.ceilings),
        'ratio': ratio,
        'ratio_min': min(ratios),
        'ratio_max': max(ratios),
        'target': target,
        'meets_target': '' if target is None else ('yes' if ratio >= target else 'no'),
        'repeats': len(ratios),
        'seconds': seconds,
        'load_1m': statistics.median(s.loads),
      }
    )
    for i, (v, c) in enumerate(zip(s.values, s.ceilings)):
      samples.append(
        {
          'benchmark': benchmark,
          'preset': preset,
          'figure': s.figure,
          'repeat': i,
          'value': v,
          'ceiling': c,
          'ratio': v / c,
          'load_1m': s.loads[i],
        }
      )
  return rows, samples


def measure(
  ceiling: Rate, figures: Dict[str, Rate], repeats: int, units: Dict[str, str], ceiling_name: str
) -> List[Series]:
  """Interleaved timings of `figures` against one ceiling, as Series."""
  before = load_1m()
  rates = interleave(ceiling, figures, repeats)
  load = (before + load_1m()) / 2.0
  return [
    Series(name, units[name], ceiling_name, rates[name], rates['__ceiling__'], [load] * repeats)
    for name in figures
  ]


def _cell(x: Any) -> str:
  if x is None:
    return ''
  if isinstance(x, float):
    if not math.isfinite(x):
      return ''
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f'{x:.6g}'
  return str(x)


def write_csv(path: pathlib.Path, fields: Sequence[str], rows: Iterable[Row]) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(fields))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _cell(row.get(k)) for k in fields})
  return path


def print_table(rows: Sequence[Row], columns: Sequence[str]) -> None:
  cells = [[_cell(r.get(c)) for c in columns] for r in rows]
  widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
  print('  '.join(c.ljust(w) for c, w in zip(columns, widths)))
  for row in cells:
    print('  '.join(v.ljust(w) for v, w in zip(row, widths)))
  sys.stdout.flush()


def plot_ratios(rows: Sequence[Row], path: pathlib.Path, title: str) -> pathlib.Path:
  """Horizontal bars: median ratio per figure, min-max whiskers, target marks."""
  fig, (ax,) = new_figure(width=7.0, height=0.5 * len(rows) + 1.5)
  labels = [f'{r["figure"]} ({r["preset"]})' for r in rows]
  y = np.arange(len(rows))[::-1]
  ratio = np.array([r['ratio'] for r in rows])
  err = np.array(
    [[r['ratio'] - r['ratio_min'] for r in rows], [r['ratio_max'] - r['ratio'] for r in rows]]
  )
  ax.barh(y, ratio, xerr=err, color='tab:blue', alpha=0.7, capsize=3)
  for yi, r in zip(y, rows):
    if r['target'] is not None:
      ax.plot([r['target']] * 2, [yi - 0.4, yi + 0.4], color='tab:red', lw=2)
    ax.text(max(r['ratio'], r['ratio_max']), yi, f'  {r["ratio"]:.2f}', va='center')
  ax.axvline(1.0, color='grey', lw=1, ls='--')
  ax.set_yticks(y, labels)
  ax.set(xlabel='ratio to ceiling (median; whiskers min-max; red: target)', title=title)
  return save(fig, path)


def report(out: pathlib.Path, name: str, rows: List[Row], samples: List[Row]) -> List[Row]:
  write_csv(out / f'{name}.csv', FIGURE_FIELDS, rows)
  write_csv(out / f'{name}_samples.csv', SAMPLE_FIELDS, samples)
  plot_ratios(rows, out / f'{name}.png', f'{name} throughput, each against its ceiling')
  print_table(
    rows,
    (
      'preset',
      'figure',
      'value',
      'unit',
      'ceiling_figure',
      'ceiling',
      'ratio',
      'ratio_min',
      'ratio_max',
      'target',
      'meets_target',
      'load_1m',
    ),
  )
  return rows
