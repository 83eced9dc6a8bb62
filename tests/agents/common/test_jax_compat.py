"""The private JAX API agents.common.jax_compat relies on is still there and still answers."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_backends_are_initialized_answers_before_and_after_jax_starts():
  # A fresh interpreter: this test process may have started JAX already.
  code = ('import jax\n'
          'from agents.common.jax_compat import backends_are_initialized\n'
          'before = backends_are_initialized()\n'
          'jax.devices()\n'
          'print(before, backends_are_initialized())\n')
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                        check=False, cwd=REPO, env=env)
  assert done.returncode == 0, done.stderr
  # None would mean jax._src.xla_bridge.backends_are_initialized is gone: see jax_compat.py.
  assert done.stdout.split() == ['False', 'True'], done.stdout + done.stderr
