"""The evaluator's videos: one evaluation episode as a small GIF, named by learner step.

`GifRecorder` is an acme EnvironmentLoop observer. Armed, it keeps every `every`-th frame
(played back in real time) of the next episode: a pixel run's own camera frame (the newest
in its observation, no extra render), or, for a state run, a `size` x `size` render of the
task's physics. `write` saves them to `<videos>/step_<learner step>.gif` (written to a
temporary name, then renamed). Rendering that fails turns the recorder off with one
warning: a run without a renderer still evaluates.
"""

import os
import pathlib
from typing import Any, List, Optional

import numpy as np

from agents.common.logs import get_logger

log = get_logger('evaluator')

# A frame's display time when the environment does not say its control step.
DEFAULT_FRAME_MS = 40


class GifRecorder:
  """Frames of one armed episode, written as a GIF."""

  def __init__(self, videos: pathlib.Path, size: int = 64, every: int = 10, camera: int = 0):
    self._dir = pathlib.Path(videos)
    self._size = size
    self._every = max(1, int(every))
    self._camera = camera
    self._frames: List[np.ndarray] = []
    self._armed = False
    self._steps = 0
    self._frame_ms = DEFAULT_FRAME_MS
    self.enabled = True

  def arm(self) -> None:
    """Record the next episode."""
    self._armed = self.enabled
    self._frames = []
    self._steps = 0

  def _frame(self, env: Any, observation: Any) -> Optional[np.ndarray]:
    if isinstance(observation, np.ndarray) and observation.dtype == np.uint8:
      return observation[..., -3:]  # A pixel run's newest camera frame.
    try:
      return env.physics.render(height=self._size, width=self._size, camera_id=self._camera)
    except Exception as e:  # pylint: disable=broad-except
      # No renderer (MUJOCO_GL=disable), or an environment without physics.
      log.warning(
        'evaluation GIFs off: cannot render (%s: %s; MUJOCO_GL=%s)',
        type(e).__name__,
        str(e).splitlines()[0] if str(e) else '',
        os.environ.get('MUJOCO_GL', '(unset)'),
      )
      self.enabled = self._armed = False
      return None

  def _keep(self, env: Any, observation: Any) -> None:
    if self._armed and self._steps % self._every == 0:
      frame = self._frame(env, observation)
      if frame is not None:
        self._frames.append(np.asarray(frame, np.uint8))
    self._steps += 1

  # acme.utils.observers.EnvLoopObserver
  def observe_first(self, env: Any, timestep: Any, *args) -> None:
    self._steps = 0
    try:  # Real time: a dm_control task's seconds per (repeated) action.
      seconds = float(env.control_timestep()) * getattr(env, 'action_repeat', 1)
      self._frame_ms = max(20, int(round(1000 * seconds * self._every)))
    except Exception:  # pylint: disable=broad-except
      self._frame_ms = DEFAULT_FRAME_MS
    self._keep(env, timestep.observation)

  def observe(self, env: Any, timestep: Any, action: Any = None, *args) -> None:
    self._keep(env, timestep.observation)
    if timestep.last():
      self._armed = False

  def get_metrics(self):
    return {}

  def write(self, learner_step: int) -> Optional[pathlib.Path]:
    """The recorded episode as `step_<learner_step>.gif`; None if nothing was recorded."""
    frames, self._frames = self._frames, []
    if not frames:
      return None
    from PIL import Image  # Late: only an evaluator that records needs it.

    self._dir.mkdir(parents=True, exist_ok=True)
    path = self._dir / f'step_{int(learner_step)}.gif'
    tmp = path.with_name(f'.{path.name}.tmp')
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
      tmp,
      format='GIF',
      save_all=True,
      append_images=images[1:],
      duration=self._frame_ms,
      loop=0,
    )
    os.replace(tmp, path)
    return path
