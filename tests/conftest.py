import logging
import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')


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
