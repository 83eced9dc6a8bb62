"""Reading the headers of CSV logs (no heavy imports: plotting uses this too)."""

import csv
import re
from typing import List, Optional, Sequence

# A column name: starts like an identifier and is not a number acme writes as text.
_NAME = re.compile(r'(?!(?:[+-]?(?:nan|inf|infinity))$)[A-Za-z_][\w./-]*', re.IGNORECASE)


def is_header(row: Sequence[str]) -> bool:
  """True for a row of column names (no cell is a number)."""
  return bool(row) and all(_NAME.fullmatch(c.strip()) for c in row)


def last_header(path: str) -> Optional[List[str]]:
  """The column names that rows at the end of the CSV file at `path` follow (None: no header)."""
  header = None
  try:
    with open(path, newline='') as f:
      for row in csv.reader(f):
        if is_header(row):
          header = [c.strip() for c in row]
  except FileNotFoundError:
    pass
  return header
