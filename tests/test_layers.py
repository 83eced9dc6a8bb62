"""The import layers of the README's Architecture section, checked on the source."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Package -> top-level packages of this project it must never import. The bottom layer,
# agents/common (errors, logs, durable writes), serves every package.
BOTTOM = 'agents.common'
FORBIDDEN = {
  'agents': ('launch', 'experiments'),
  'networks': ('agents', 'launch', 'experiments', 'environments'),
  'environments': ('agents', 'launch', 'experiments', 'networks'),
  'launch': ('experiments',),
}


def _imported(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.module


def test_no_package_imports_from_a_layer_above_it():
  found = []
  for package, above in FORBIDDEN.items():
    for path in sorted((ROOT / package).rglob('*.py')):
      for name in _imported(path):
        if name.split('.')[0] in above and not (name + '.').startswith(BOTTOM + '.'):
          found.append(f'{path.relative_to(ROOT)} imports {name}')
  assert found == []
