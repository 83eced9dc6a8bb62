"""Loggers writing CSV and TensorBoard events under the run directory."""

import csv
import pathlib
from typing import Optional

from acme.utils import loggers
from acme.utils.loggers import tf_summary

from launch.csv_log import last_header


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
