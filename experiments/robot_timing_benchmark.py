"""Control-loop timing of the robot adapter while attached to a running program.

Launches the program (local_mp, cartpole:swingup, learning while it runs), then, one
rate after another, attaches a simulated robot with `python -m launch.attach` and
reads the control loop's timing from the attach process's status file: deadline
misses (the action came after the watchdog's deadline, 80% of a period), watchdog
safe actions, skipped ticks and the jitter of the reading period (|period - k/rate|).

  python -m experiments.robot_timing_benchmark --rates 20,50,100 --rt_priorities 0,50 \\
      --episodes 3 --episode_seconds 10 --out experiments/results/robot_timing

Writes <out>/robot_timing.csv (one row per rate and priority) and prints the table. The
machine's 1-minute load average at the end of each rate is recorded with it:
everything (program and robot) shares this machine's cores.
"""

import argparse
import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIELDS = (
  'rate_hz',
  'rt_priority',
  'steps',
  'episodes',
  'deadline_ms',
  'deadline_misses',
  'miss_rate_pct',
  'watchdog_actions',
  'skipped_ticks',
  'period_p50_ms',
  'jitter_p50_ms',
  'jitter_p90_ms',
  'jitter_p99_ms',
  'jitter_max_ms',
  'lateness_p99_ms',
  'lateness_max_ms',
  'episodes_delivered',
  'parameter_updates',
  'policy_versions',
  'load_avg_1m',
)
# Small networks and a short evaluation cadence: the program learns (and loads the
# machine) while the robot runs, as it would in an experiment.
PROGRAM_ARGS = [
  '--num_actors',
  '1',
  '--max_actor_steps',
  '1000000000',
  '--eval_every_seconds',
  '30',
  '--eval_episodes',
  '1',
]


def _csv_list(text: str) -> List[float]:
  try:
    return [float(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected comma-separated rates, got {text!r}') from None


def parse_args(argv):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    '--rates',
    type=_csv_list,
    default=[20.0, 50.0, 100.0],
    help='control rates in Hz; cartpole needs divisors of 100 Hz',
  )
  p.add_argument('--episodes', type=int, default=3, help='episodes per rate')
  p.add_argument('--episode_seconds', type=float, default=10.0, help='length of an episode')
  p.add_argument('--out', default='experiments/results/robot_timing')
  p.add_argument('--run_dir', default=None, help='default: a fresh temporary directory')
  p.add_argument(
    '--program_arg',
    action='append',
    default=[],
    help='extra argument for experiments.collect_infer (repeatable)',
  )
  p.add_argument(
    '--rt_priorities',
    default='0',
    help='comma-separated --rt_priority values to run each rate with (0: normal '
    'scheduling; e.g. 0,50 compares with SCHED_FIFO, which needs CAP_SYS_NICE)',
  )
  p.add_argument('--startup_timeout_s', type=float, default=300.0)
  return p.parse_args(argv)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc.poll() is not None:
      raise RuntimeError(f'{what}: the process exited with {proc.returncode}')
    time.sleep(0.5)
  raise RuntimeError(f'timed out after {timeout:g} s waiting for {what}')


def _row(rate: float, priority: int, status: Dict[str, Any]) -> Dict[str, Any]:
  timing = status['timing']
  ms = lambda key: round(1e3 * timing[key], 3)
  return {
    'rate_hz': rate,
    'rt_priority': priority,
    'steps': timing['steps'],
    'episodes': timing['episodes'],
    'deadline_ms': round(0.8e3 / rate, 3),
    'deadline_misses': timing['deadline_misses'],
    'miss_rate_pct': round(100.0 * timing['deadline_misses'] / max(1, timing['steps']), 3),
    'watchdog_actions': timing['watchdog_actions'],
    'skipped_ticks': timing['skipped_ticks'],
    'period_p50_ms': ms('period_p50_s'),
    'jitter_p50_ms': ms('jitter_p50_s'),
    'jitter_p90_ms': ms('jitter_p90_s'),
    'jitter_p99_ms': ms('jitter_p99_s'),
    'jitter_max_ms': ms('jitter_max_s'),
    'lateness_p99_ms': ms('lateness_p99_s'),
    'lateness_max_ms': ms('lateness_max_s'),
    'episodes_delivered': status['delivery']['store'],
    'parameter_updates': status['parameters']['updates'],
    'policy_versions': len(status['parameters']['versions']),
    'load_avg_1m': round(os.getloadavg()[0], 2),
  }


def attach_once(
  run_dir: pathlib.Path,
  work: pathlib.Path,
  rate: float,
  priority: int,
  episodes: int,
  episode_seconds: float,
) -> Dict[str, Any]:
  """Attaches a simulated robot at `rate` for `episodes` episodes; returns its final status."""
  name = f'bench_{int(rate)}hz_rt{priority}'
  outbox = work / name
  log = open(work / f'{name}.log', 'w')
  cmd = [
    sys.executable,
    '-m',
    'launch.attach',
    '--run_dir',
    str(run_dir),
    '--env',
    'environments.simulated_robot:make_simulated_robot_env',
    '--env_arg',
    f'control_hz={rate:g}',
    '--env_arg',
    f'max_episode_steps={int(round(rate * episode_seconds))}',
    '--name',
    name,
    '--buffer_dir',
    str(outbox),
    '--max_episodes',
    str(episodes),
    '--rt_priority',
    str(priority),
  ]
  proc = subprocess.run(
    cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=600 + episodes * episode_seconds
  )
  if proc.returncode != 0:
    raise RuntimeError(f'attach at {rate:g} Hz failed ({proc.returncode}); see {log.name}')
  return json.loads((outbox / 'status.json').read_text())


def write_csv(path: pathlib.Path, rows: List[Dict[str, Any]]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)


def format_table(rows: List[Dict[str, Any]]) -> str:
  columns = (
    'rate_hz',
    'rt_priority',
    'steps',
    'deadline_ms',
    'deadline_misses',
    'miss_rate_pct',
    'watchdog_actions',
    'skipped_ticks',
    'period_p50_ms',
    'jitter_p50_ms',
    'jitter_p90_ms',
    'jitter_p99_ms',
    'jitter_max_ms',
    'load_avg_1m',
  )
  widths = [
    max(len(c), *(len(f'{r[c]:g}' if isinstance(r[c], float) else str(r[c])) for r in rows))
    for c in columns
  ]
  cell = lambda v: f'{v:g}' if isinstance(v, float) else str(v)
  lines = ['  '.join(c.rjust(w) for c, w in zip(columns, widths))]
  lines += ['  '.join(cell(r[c]).rjust(w) for c, w in zip(columns, widths)) for r in rows]
  return '\n'.join(lines)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  priorities = [int(p) for p in args.rt_priorities.split(',') if p.strip()]
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  work = pathlib.Path(tempfile.mkdtemp(prefix='robot_timing_'))
  run_dir = pathlib.Path(args.run_dir) if args.run_dir else work / 'run'
  program_log = open(work / 'program.log', 'w')
  program = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'experiments.collect_infer',
      '--run_dir',
      str(run_dir),
      *PROGRAM_ARGS,
      *args.program_arg,
    ],
    cwd=ROOT,
    stdout=program_log,
    stderr=subprocess.STDOUT,
    start_new_session=True,
  )
  rows = []
  try:
    _wait_for(
      (run_dir / 'addresses.json').exists,
      args.startup_timeout_s,
      'the program to publish its addresses',
      program,
    )
    print(f'[benchmark] program running in {run_dir}; logs in {work}', flush=True)
    for priority in priorities:
      for rate in args.rates:
        print(
          f'[benchmark] attaching at {rate:g} Hz (rt_priority {priority}) for '
          f'{args.episodes} x {args.episode_seconds:g} s',
          flush=True,
        )
        rows.append(
          _row(
            rate,
            priority,
            attach_once(run_dir, work, rate, priority, args.episodes, args.episode_seconds),
          )
        )
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
  finally:
    if program.poll() is None:
      os.killpg(program.pid, signal.SIGINT)
      try:
        program.wait(timeout=120)
      except subprocess.TimeoutExpired:
        os.killpg(program.pid, signal.SIGKILL)
  if rows:
    path = out / 'robot_timing.csv'
    write_csv(path, rows)
    print(format_table(rows))
    print(f'[benchmark] wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
