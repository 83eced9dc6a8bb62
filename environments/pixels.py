"""Camera images as observations: suite and manipulation tasks rendered headless, uint8.

A pixel environment's observation is one uint8 array [size, size, 3 * frame_stack], the
last `frame_stack` camera frames stacked along the channels (oldest first), so the program's
one-observation-array path (replay, store, export) carries it as it is. With
`features=True` (a run's `--pixel_features`) the observation is
`{'features': float32 [F], 'pixels': ...}`, the task's own non-image readings flattened in
sorted key order.

Task names: any suite 'domain:task', or 'manipulation:<name>' for dm_control.manipulation
(e.g. 'manipulation:reach_site_vision', 'manipulation:stack_2_bricks_features'); the image
is rendered from the task's physics with the chosen camera either way. A state run (no
pixels) takes the '*_features' manipulation tasks (environments.suite.make_environment).

Rendering is headless: `choose_renderer` picks MUJOCO_GL (egl, then osmesa) before
dm_control loads, and says in one line which values it tried when none works.
"""

import collections
import dataclasses
import os
import subprocess
import sys
from typing import Any, Deque, Dict, Optional, Sequence, Tuple

import dm_env
import numpy as np
from dm_env import specs

from agents.common.errors import ConfigError

MANIPULATION_PREFIX = 'manipulation:'
FEATURES_SUFFIX = '_features'  # Manipulation tasks a state run can take.
RENDERERS = ('egl', 'osmesa')
# A suite domain's camera where camera 0 does not keep the body in view. cartpole's camera 0
# ('fixed') watches the middle of the rail, and a policy that drives the cart off its edge
# sees the same image in every state from then on (benchmark 1 of issue 24: 76-89 with
# camera 0, 403 with 'lookatcart', which turns to follow the cart); quadruped's 'y' is the
# tracking side view pixel-based agents use. Every other task: camera 0.
DEFAULT_CAMERAS = {'cartpole': 1, 'quadruped': 2}
# Seconds an episode of a manipulation task lasts, as dm_control.manipulation.load sets it.
MANIPULATION_TIME_LIMIT_S = 10.0
# What a user's own MUJOCO_GL was before agents.common.quiet set its default ('disable').
_USER_GL_ENV = 'COLLECT_INFER_USER_MUJOCO_GL'
_PROBE = (
  'from dm_control import _render\n'
  'ctx = _render.Renderer(max_width=16, max_height=16)\n'
  'ctx.free()\n'
)


class RendererError(RuntimeError):
  """No headless renderer works here (the message names the MUJOCO_GL values tried)."""


@dataclasses.dataclass(frozen=True)
class PixelSettings:
  """How a task is seen: image size, camera, frames stacked, action repeat, features too."""

  size: int = 64
  camera: Optional[int] = None  # None: the task's own (default_camera)
  frame_stack: int = 3
  action_repeat: int = 1
  features: bool = False

  def __post_init__(self):
    for name in ('size', 'frame_stack', 'action_repeat'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f'{name} must be a positive integer, got {value!r}')
    camera = self.camera
    is_id = isinstance(camera, int) and not isinstance(camera, bool) and camera >= -1
    if camera is not None and not is_id:
      raise ConfigError(
        f"camera must be a camera id >= 0 (or -1, the free camera; None: the task's own), "
        f'got {self.camera!r}'
      )


def default_camera(task: str) -> int:
  """The camera a task is seen through when none is chosen (DEFAULT_CAMERAS, else 0)."""
  if task.startswith(MANIPULATION_PREFIX):
    return 0
  return DEFAULT_CAMERAS.get(task.split(':', 1)[0], 0)


def _renderer_works(backend: str) -> Tuple[bool, str]:
  """Whether dm_control can make a 16x16 context with MUJOCO_GL=backend (in a subprocess,
  since dm_control fixes its backend when it is first imported)."""
  env = dict(os.environ, MUJOCO_GL=backend)
  if backend == 'egl':
    env.pop('PYOPENGL_PLATFORM', None)
  try:
    done = subprocess.run(
      [sys.executable, '-c', _PROBE], env=env, capture_output=True, text=True, timeout=60
    )
  except subprocess.TimeoutExpired:
    return False, 'timed out'
  if done.returncode == 0:
    return True, ''
  lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
  return False, lines[-1] if lines else f'exit code {done.returncode}'


def choose_renderer(required: bool) -> Optional[str]:
  """Sets MUJOCO_GL to a headless renderer that works here, and returns it.

  A renderer the user chose (MUJOCO_GL set before the program started) is kept. Otherwise
  egl, then osmesa, are tried. None works: RendererError (one line) if `required`, else None
  and MUJOCO_GL is left as it is. Call it before dm_control is imported.
  """
  user = os.environ[_USER_GL_ENV] if _USER_GL_ENV in os.environ else os.environ.get('MUJOCO_GL')
  if user == 'disable':
    if required:
      raise RendererError(
        f'pixel observations need a renderer; tried MUJOCO_GL=disable (set by you); '
        f'unset it or set one of {", ".join(RENDERERS)}'
      )
    return None
  if user:
    os.environ['MUJOCO_GL'] = user
    return user
  tried = []
  for backend in RENDERERS:
    ok, why = _renderer_works(backend)
    if ok:
      # Processes started from here on render with it (this one only if dm_control
      # has not loaded yet: `render` names the backend it loaded with).
      os.environ['MUJOCO_GL'] = backend
      return backend
    tried.append(f'MUJOCO_GL={backend} ({why})')
  if required:
    raise RendererError(
      'no headless renderer for pixel observations; tried ' + ', '.join(tried) + '; install '
      "Mesa's EGL (e.g. Debian's libegl1 libgl1-mesa-dri) or OSMesa (libosmesa6)"
    )
  return None


def render(physics: Any, size: int, camera: int) -> np.ndarray:
  """One uint8 [size, size, 3] frame; RendererError (one line) if rendering fails."""
  try:
    return physics.render(height=size, width=size, camera_id=camera)
  except Exception as e:  # dm_control raises RuntimeError, ValueError, GL errors...
    loaded = sys.modules.get('dm_control._render')
    backend = getattr(loaded, 'BACKEND', None) or os.environ.get('MUJOCO_GL', '(unset)')
    raise RendererError(
      f'rendering a {size}x{size} image from camera {camera} failed with MUJOCO_GL={backend} '
      f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); '
      f'tried MUJOCO_GL={backend}; set MUJOCO_GL to one of {", ".join(RENDERERS)}'
    ) from None


def _feature_keys(observation_spec: Dict[str, Any]) -> Tuple[str, ...]:
  """The task's own non-image observations (a *_vision task's camera images are left out)."""
  return tuple(k for k in sorted(observation_spec) if observation_spec[k].dtype != np.uint8)


def _flat_features(observation: Dict[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
  parts = [np.asarray(observation[k], np.float32).ravel() for k in keys]
  return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class PixelWrapper(dm_env.Environment):
  """A dm_control environment seen through a camera, with frame stacking and action repeat.

  Rewards over the repeated steps are summed and discounts multiplied; an episode that ends
  mid-repeat ends there.
  """

  def __init__(self, env: dm_env.Environment, settings: PixelSettings):
    self._env = env
    self._s = settings
    cameras = int(env.physics.model.ncam)
    if settings.camera >= cameras:
      raise ValueError(
        f'camera={settings.camera} is invalid: the task has {cameras} camera(s), ids 0 to '
        f'{cameras - 1} (-1: the free camera)'
      )
    self._frames: Deque[np.ndarray] = collections.deque(maxlen=settings.frame_stack)
    s = settings
    self._pixel_spec = specs.BoundedArray(
      (s.size, s.size, 3 * s.frame_stack), np.uint8, 0, 255, name='pixels'
    )
    raw_spec = env.observation_spec()
    self._keys = _feature_keys(raw_spec)
    n_features = int(sum(np.prod(raw_spec[k].shape) for k in self._keys))
    self._feature_spec = specs.Array((n_features,), np.float32, name='features')

  @property
  def physics(self) -> Any:
    return self._env.physics

  @property
  def action_repeat(self) -> int:
    return self._s.action_repeat

  def control_timestep(self) -> float:
    """Seconds per step of the task (an action lasts action_repeat of them)."""
    return self._env.control_timestep()

  def _observation(self, raw: Dict[str, np.ndarray]) -> Any:
    pixels = np.concatenate(self._frames, axis=-1)
    if self._s.features:
      return {'pixels': pixels, 'features': _flat_features(raw, self._keys)}
    return pixels

  def _frame(self) -> np.ndarray:
    return render(self._env.physics, self._s.size, self._s.camera)

  def reset(self) -> dm_env.TimeStep:
    timestep = self._env.reset()
    frame = self._frame()
    for _ in range(self._s.frame_stack):
      self._frames.append(frame)
    return timestep._replace(observation=self._observation(timestep.observation))

  def step(self, action) -> dm_env.TimeStep:
    reward, discount = 0.0, 1.0
    for _ in range(self._s.action_repeat):
      timestep = self._env.step(action)
      reward += timestep.reward or 0.0
      discount *= 1.0 if timestep.discount is None else timestep.discount
      if timestep.last():
        break
    self._frames.append(self._frame())
    return timestep._replace(
      observation=self._observation(timestep.observation), reward=reward, discount=discount
    )

  def observation_spec(self):
    if self._s.features:
      return {'pixels': self._pixel_spec, 'features': self._feature_spec}
    return self._pixel_spec

  def action_spec(self):
    return self._env.action_spec()

  def reward_spec(self):
    return self._env.reward_spec()

  def discount_spec(self):
    return self._env.discount_spec()

  def close(self):
    self._env.close()


def load_raw(task: str, seed: int = 0) -> dm_env.Environment:
  """The task's own dm_control environment: suite 'domain:task' or 'manipulation:<name>'."""
  if is_manipulation(task):
    check_task(task, pixels=True)
    return _load_manipulation(task[len(MANIPULATION_PREFIX) :], seed)
  from dm_control import suite

  from environments.suite import parse_task

  domain, task_name = parse_task(task)
  return suite.load(domain, task_name, task_kwargs={'random': seed})


def _load_manipulation(name: str, seed: int) -> dm_env.Environment:
  """dm_control.manipulation.load's environment with the task's own camera observables off.

  The wrapper renders the camera itself. Left on, a *_vision task renders its own 84x84
  image at every step, to be dropped, and once while it is built: that binds the EGL
  context to the building thread, and an actor node builds on its main thread and steps
  on another, where the physics recompile of every composer reset then fails ("Cannot make
  context ... current on thread").
  """
  from dm_control import (
    composer,
    manipulation,  # noqa: F401  (registers the tasks)
  )
  from dm_control.composer.observation import observable
  from dm_control.manipulation.shared import registry

  task = registry.get_constructor(name)()
  for obs in task.observables.values():
    if isinstance(obs, observable.MJCFCamera):
      obs.enabled = False
  return composer.Environment(task, time_limit=MANIPULATION_TIME_LIMIT_S, random_state=seed)


def is_manipulation(task: str) -> bool:
  return isinstance(task, str) and task.startswith(MANIPULATION_PREFIX)


def check_task(task: str, pixels: bool) -> None:
  """ValueError (one line) unless `task` names a suite or manipulation task this can run."""
  if not is_manipulation(task):
    from environments.suite import parse_task

    parse_task(task)
    return
  from dm_control import manipulation

  name = task[len(MANIPULATION_PREFIX) :]
  if name not in manipulation.ALL:
    raise ValueError(
      f'unknown manipulation task {name!r}; valid: {", ".join(sorted(manipulation.ALL))}'
    )
  if not pixels and not name.endswith(FEATURES_SUFFIX):
    # A *_vision task's observation holds the task's own camera images; its *_features twin
    # is the same task seen through joint and prop readings only.
    twin = name.rsplit('_', 1)[0] + FEATURES_SUFFIX
    hint = f' or {MANIPULATION_PREFIX}{twin} from state' if twin in manipulation.ALL else ''
    raise ValueError(f'{task}: its observation holds camera images; run it with --pixels{hint}')


def make_pixel_environment(
  task: str, seed: int = 0, settings: PixelSettings = PixelSettings()
) -> dm_env.Environment:
  """The task seen through a camera (uint8 images), actions in [-1, 1], float32 rewards."""
  from acme import wrappers

  if settings.camera is None:
    settings = dataclasses.replace(settings, camera=default_camera(task))
  env = PixelWrapper(load_raw(task, seed), settings)
  env = wrappers.CanonicalSpecWrapper(env, clip=True)
  return wrappers.SinglePrecisionWrapper(env)


def frames(observation: np.ndarray) -> Sequence[np.ndarray]:
  """The stacked frames of a pixel observation [H, W, 3k], oldest first."""
  return [observation[..., i : i + 3] for i in range(0, observation.shape[-1], 3)]
