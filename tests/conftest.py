import atexit
import logging
import os
import shutil
import tempfile

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
if 'MUJOCO_GL' not in os.environ:
  # Before anything imports dm_control, which fixes its renderer then: the pixel tests
  # render headless (egl or osmesa, whichever works here); without one nothing renders.
  from environments.pixels import choose_renderer

  if choose_renderer(required=False) is None:
    os.environ['MUJOCO_GL'] = 'disable'


def _compilation_cache() -> None:
  """One JAX compilation cache for the session, this process and every program it launches.

  Launches of the same tiny config compile the same learner update and policies (about 8 s
  of CPU per learner); from the second launch on they load them. Fresh per session, so no
  entry outlives the code that made it.
  """
  if 'JAX_COMPILATION_CACHE_DIR' in os.environ:
    return
  path = tempfile.mkdtemp(prefix='collect-infer-jax-cache-')
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = path
  # Every compilation, also the small op-by-op ones of building a learner's first state.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')


_compilation_cache()

# The shared run's budget, in actor steps.
BUDGET_RUN_STEPS = 2000


@pytest.fixture
def caplog(caplog):  # pylint: disable=redefined-outer-name
  """pytest's caplog, also seeing the project's loggers.

  agents.common.logs stops them propagating to the root logger, where caplog listens
  (absl's handler there would print every line twice).
  """
  logger = logging.getLogger('collect_infer')
  logger.addHandler(caplog.handler)
  yield caplog
  logger.removeHandler(caplog.handler)


@pytest.fixture(scope='session')
def budget_run(tmp_path_factory):
  """One tiny local_mp program run to its budget of actor steps, launched once per session.

  End-to-end tests that only read what a finished run leaves (its output, run
  directory, store) share it; a test that changes the run works on a copy.
  """
  from tests.e2e_util import run_to_end
  from tests.fakes import TINY_WITH_GIFS

  run_dir = tmp_path_factory.mktemp('budget_run') / 'run'
  # The default per-launch fork server, as `make run` uses it (other launches share one).
  return run_to_end(
    run_dir,
    '--max_actor_steps',
    str(BUDGET_RUN_STEPS),
    # Checkpoints at learner steps as well as every 8 s: a quicker run still keeps several
    # (the torn-checkpoint test resumes from the one before the newest).
    *('--eval_every_learner_steps', '800'),
    *TINY_WITH_GIFS,
    timeout=420,
    share_fork_server=False,
  )
