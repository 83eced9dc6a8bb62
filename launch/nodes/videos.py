"""The evaluator's videos: one evaluation episode as a small GIF, named by learner step.

`GifRecorder` is an acme EnvironmentLoop observer. Armed, it keeps every `every`-th step
(played back in real time) of the next episode: a pixel run's own camera frame (the newest
in its observation), or, for a state run, the physics state, rendered `size` x `size` later.
`write` renders and saves them to `<videos>/step_<learner step>.gif` in a background thread
(a temporary name, then renamed), from a copy of the physics taken when the episode ended:
rendering is slow (software OpenGL), and the evaluation must not wait for it. Rendering that
fails turns the recorder off with one warning: a run without a renderer still evaluates.
"""

import os
import pathlib
import threading
from typing import Any, List, Optional

import numpy as np

from agents.common.logs import get_logger

log = get_logger('evaluator')

# A frame's display time when the environment does not say its control step.
DEFAULT_FRAME_MS = 40


class GifRecorder:
  """Steps of one armed episode, written as a GIF."""

  def __init__(self, videos: pathlib.Path, size: int = 64, every: int = 10, camera: int = 0):
    self._dir = pathlib.Path(videos)
    self._size = size
    self._every = max(1, int(every))
    self._camera = camera
    self._kept: List[np.ndarray] = []  # frames (pixel runs) or physics states
    self._physics = None  # a copy at the episode's end, to render the states with
    self._source = None  # the environment's physics
    self._armed = False
    self._steps = 0
    self._frame_ms = DEFAULT_FRAME_MS
    self._thread: Optional[threading.Thread] = None
    self.enabled = True

  def arm(self) -> None:
    """Record the next episode."""
    self._armed = self.enabled
    self._kept, self._physics, self._steps = [], None, 0

  def _off(self, e: Exception) -> None:
    # No renderer (MUJOCO_GL=disable), or an environment without physics.
    log.warning(
      'evaluation GIFs off: cannot render (%s: %s; MUJOCO_GL=%s)',
      type(e).__name__,
      str(e).splitlines()[0] if str(e) else '',
      os.environ.get('MUJOCO_GL', '(unset)'),
    )
    self.enabled = self._armed = False
    self._kept = []

  def _keep(self, env: Any, observation: Any) -> None:
    if self._armed and self._steps % self._every == 0:
      if isinstance(observation, dict):  # A pixel run's image with the state features.
        observation = observation.get('pixels')
      if isinstance(observation, np.ndarray) and observation.dtype == np.uint8:
        self._kept.append(observation[..., -3:].copy())  # A pixel run's newest frame.
      else:
        try:
          self._source = env.physics
          self._kept.append(np.array(self._source.get_state(), copy=True))
        except Exception as e:  # pylint: disable=broad-except
          self._off(e)
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
    if timestep.last() and self._armed:
      self._armed = False
      if self._kept and self._kept[0].dtype != np.uint8:
        # Its own model too: a task may move things in it (targets) in later episodes.
        self._physics = env.physics.copy(share_model=False)

  def get_metrics(self):
    return {}

  def write(self, learner_step: int) -> Optional[pathlib.Path]:
    """Starts writing the recorded episode to `step_<learner_step>.gif` (after any earlier
    write has finished) and returns that path; None if nothing was recorded."""
    kept, physics, self._kept, self._physics = self._kept, self._physics, [], None
    if not kept:
      return None
    if physics is None and kept[0].dtype != np.uint8:  # An episode cut short.
      physics = self._source.copy(share_model=False)
    self.wait()
    path = self._dir / f'step_{int(learner_step)}.gif'
    self._thread = threading.Thread(
      target=self._render_and_save, args=(kept, physics, path, self._frame_ms), daemon=True
    )
    self._thread.start()
    return path

  def wait(self, timeout: Optional[float] = None) -> None:
    """Until the GIF being written (if any) is on disk."""
    if self._thread is not None:
      self._thread.join(timeout)

  def _render_and_save(self, kept, physics, path: pathlib.Path, frame_ms: int) -> None:
    try:
      frames = kept if physics is None else [self._render(physics, state) for state in kept]
    except Exception as e:  # pylint: disable=broad-except
      self._off(e)
      return
    from PIL import Image  # Late: only an evaluator that records needs it.

    try:
      self._dir.mkdir(parents=True, exist_ok=True)
      tmp = path.with_name(f'.{path.name}.tmp')
      images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
      images[0].save(
        tmp, format='GIF', save_all=True, append_images=images[1:], duration=frame_ms, loop=0
      )
      os.replace(tmp, path)
    except OSError as e:  # A full disk must not stop the evaluator.
      log.warning('evaluation GIF not written: %s', e)

  def _render(self, physics: Any, state: np.ndarray) -> np.ndarray:
    with physics.reset_context():
      physics.set_state(state)
    return physics.render(height=self._size, width=self._size, camera_id=self._camera)
