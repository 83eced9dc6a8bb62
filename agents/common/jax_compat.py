"""The one place this project reaches into JAX's private API.

Checked against jax 0.6.2. JAX has no public way to ask whether its backends (the XLA
clients) exist yet: `jax.devices()` and `jax.extend.backend.backends()` create them
as a side effect. tests/agents/common/test_jax_compat.py fails if what this relies on
goes away.
"""

from typing import Optional


def backends_are_initialized() -> Optional[bool]:
  """Whether JAX has made its backends in this process; None where this JAX cannot say.

  Relies on `jax._src.xla_bridge.backends_are_initialized()` (jax 0.6.2).
  """
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return None
