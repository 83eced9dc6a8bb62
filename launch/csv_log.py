"""Reading the headers of CSV logs (no heavy imports: plotting uses this too)."""

import csv
import re
from typing import Iterable, List, Optional, Sequence

# A column name: starts like an identifier and is not a number acme writes as text.
_NAME = re.compile(r'(?!(?:[+-]?(?:nan|inf|infinity))$)[A-Za-z_][\w./-]*', re.IGNORECASE)


def is_header(row: Sequence[str]) -> bool:
  """True for a row of column names (no cell is a number)."""
  return bool(row) and all(_NAME.fullmatch(c.strip()) for c in row)


def last_header(lines: Iterable[str]) -> Optional[List[str]]:
  """The column names that the last rows of a CSV log's `lines` follow (None: no header)."""
  header = None
  for row in csv.reader(lines):
    if is_header(row):
      header = [c.strip() for c in row]
  return header
