"""Loggers writing CSV and TensorBoard events under the run directory."""

import csv
import pathlib
from typing import Optional

from acme.utils import loggers
from acme.utils.loggers import tf_summary

from agents.common.logs import get_logger
from launch.csv_log import last_header


def quiet_node_logs() -> None:
  """Keeps a node's terminal output to warnings and our own progress lines."""
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)


def announce_process(name: str) -> None:
  """One line saying which process runs a node (for `kill`, `py-spy`, `top -p`).

  Every node calls it first thing, so it also binds a node process to its launcher
  (`launch.local.node_guard`: the node dies with the launcher and holds the run's
  node lock); a no-op for nodes that are not processes started by a local launcher.
  """
  import os
  import socket

  from launch.local.node_guard import bind_to_launcher

  bind_to_launcher()
  get_logger(name).info('running as pid %d on %s', os.getpid(), socket.gethostname())


class AppendingCSVLogger(loggers.CSVLogger):
  """acme's CSVLogger, plus a header line when appended rows have other columns.

  acme writes a header only into an empty file, so a resumed run whose first row has other
  fields (e.g. counts restored from a checkpoint) would append rows that no longer line up
  with the header. A new header line keeps every row readable (`experiments.plot_run`
  switches column names at each header).
  """

  def write(self, data: loggers.LoggingData) -> None:
    if self._writer is None and self._file.tell():
      with open(self.file_path, newline='') as f:
        text = f.read()
      if not text.endswith('\n'):
        self._file.write('\n')  # End a row a crash cut short, not extend it.
      fields = sorted(data.keys())
      if last_header(text.splitlines()) != fields:
        csv.writer(self._file).writerow(fields)
    super().write(data)


def make_logger(
  run_dir: pathlib.Path,
  label: str,
  time_delta: float = 0.0,
  steps_key: Optional[str] = None,
  terminal: bool = False,
) -> loggers.Logger:
  """A logger writing CSV and TensorBoard events under the run directory.

  CSV at <run>/logs/<label>/logs.csv (appended on resume), TensorBoard at <run>/logs/tb/<label>/.
  """
  run_dir = pathlib.Path(run_dir)
  targets = [
    AppendingCSVLogger(str(run_dir), label=label, add_uid=False, flush_every=1),
    tf_summary.TFSummaryLogger(str(run_dir / 'logs' / 'tb'), label=label, steps_key=steps_key),
  ]
  if terminal:
    targets.append(loggers.TerminalLogger(label=label))
  logger = loggers.Dispatcher(targets)
  logger = loggers.NoneFilter(logger)
  if time_delta > 0:
    logger = loggers.TimeFilter(logger, time_delta)
  return logger
