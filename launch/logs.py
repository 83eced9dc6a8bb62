"""Loggers writing CSV and TensorBoard events under the run directory."""

import pathlib
from typing import Optional

from acme.utils import loggers
from acme.utils.loggers import tf_summary


def quiet_node_logs() -> None:
  """Keeps a node's terminal output to warnings and our own progress lines."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)


def announce_process(name: str) -> None:
  """One line saying which process runs a node (for `kill`, `py-spy`, `top -p`)."""
  import os
  import socket
  print(f'[{name}] running as pid {os.getpid()} on {socket.gethostname()}', flush=True)


def make_logger(run_dir: pathlib.Path, label: str, time_delta: float = 0.0,
                steps_key: Optional[str] = None, terminal: bool = False) -> loggers.Logger:
  """CSV at <run>/logs/<label>/logs.csv (appended on resume), TensorBoard at <run>/logs/tb/<label>/."""
  run_dir = pathlib.Path(run_dir)
  targets = [
      loggers.CSVLogger(str(run_dir), label=label, add_uid=False, flush_every=1),
      tf_summary.TFSummaryLogger(str(run_dir / 'logs' / 'tb'), label=label, steps_key=steps_key),
  ]
  if terminal:
    targets.append(loggers.TerminalLogger(label=label))
  logger = loggers.Dispatcher(targets)
  logger = loggers.NoneFilter(logger)
  if time_delta > 0:
    logger = loggers.TimeFilter(logger, time_delta)
  return logger
