"""Silence, before they load, the libraries that print to a user who did nothing wrong.

Call `quiet_third_party()` first thing in an entry point, before dm_control, acme's
wrappers (which import gym) or TensorFlow load:

* gym prints a deprecation banner on import whenever the `gym_notices` package is
  installed; the program never uses gym (acme's wrappers import it), so the notice is
  hidden from it (gym ignores a notices module that fails to import);
* dm_control probes for a renderer (GLFW, which warns without a DISPLAY) unless
  MUJOCO_GL says otherwise; the program reads state features only, so rendering is off
  (`disable`) unless the user chose a renderer;
* TensorFlow's C++ start-up lines are turned off unless the user chose a level.
"""

import os
import sys


def quiet_third_party() -> None:
  """Hides gym's banner, dm_control's renderer probe and TensorFlow's start-up lines."""
  # Remembered for environments.pixels.choose_renderer: a renderer the user chose is kept.
  os.environ.setdefault('COLLECT_INFER_USER_MUJOCO_GL', os.environ.get('MUJOCO_GL', ''))
  os.environ.setdefault('MUJOCO_GL', 'disable')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  if 'gym' not in sys.modules:
    # A None entry makes `import gym_notices.notices` fail; gym then prints nothing.
    sys.modules.setdefault('gym_notices', None)
