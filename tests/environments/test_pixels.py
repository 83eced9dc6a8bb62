"""Pixel observations rendered for real (headless, 16x16): frames, stacking, action repeat,
manipulation tasks, and the one-line error when no renderer works."""

import threading

import numpy as np
import pytest

from environments import pixels
from environments.pixels import PixelSettings, RendererError, make_pixel_environment

SIZE = 16


def test_suite_task_frames_stack_and_repeat():
  settings = PixelSettings(size=SIZE, frame_stack=3, action_repeat=4)
  env = make_pixel_environment('cartpole:swingup', seed=3, settings=settings)
  raw = pixels.load_raw('cartpole:swingup', seed=3)  # the same task, stepped by hand
  spec = env.observation_spec()
  assert (spec.shape, spec.dtype) == ((SIZE, SIZE, 9), np.uint8)
  first = env.reset()
  raw.reset()
  assert first.observation.dtype == np.uint8 and first.observation.shape == (SIZE, SIZE, 9)
  f0, f1, f2 = pixels.frames(first.observation)
  np.testing.assert_array_equal(f0, f2)  # a fresh episode repeats its first frame
  # cartpole's default camera: 'lookatcart' (1).
  np.testing.assert_array_equal(f2, raw.physics.render(SIZE, SIZE, camera_id=1))
  action = np.array([1.0], np.float32)
  step = env.step(action)
  rewards = [raw.step(action).reward for _ in range(4)]
  assert step.reward.dtype == np.float32
  np.testing.assert_allclose(step.reward, sum(rewards), rtol=1e-6)
  g0, g1, g2 = pixels.frames(step.observation)
  np.testing.assert_array_equal(g1, f2)  # the stack moved on by one frame
  np.testing.assert_array_equal(g2, raw.physics.render(SIZE, SIZE, camera_id=1))
  assert not np.array_equal(g2, f2)  # four steps of full push move the cart


def test_a_task_is_seen_through_its_own_camera_unless_one_is_chosen():
  assert pixels.default_camera('cartpole:swingup') == 1
  assert pixels.default_camera('cartpole:balance@pole_length=0.8') == 1  # a variant too
  assert pixels.default_camera('quadruped:walk') == 2
  assert pixels.default_camera('walker:walk') == pixels.default_camera('reacher:easy') == 0
  assert pixels.default_camera('manipulation:reach_site_vision') == 0

  def first_frame(task, camera):
    settings = PixelSettings(size=SIZE, frame_stack=1, camera=camera)
    return make_pixel_environment(task, seed=1, settings=settings).reset().observation

  cartpole = first_frame('cartpole:swingup', None)
  np.testing.assert_array_equal(cartpole, first_frame('cartpole:swingup', 1))
  assert not np.array_equal(cartpole, first_frame('cartpole:swingup', 0))
  np.testing.assert_array_equal(first_frame('walker:walk', None), first_frame('walker:walk', 0))
  assert not np.array_equal(first_frame('walker:walk', 0), first_frame('walker:walk', 1))


def test_manipulation_vision_task_with_features():
  settings = PixelSettings(size=SIZE, frame_stack=1, features=True)
  env = make_pixel_environment('manipulation:reach_site_vision', seed=0, settings=settings)
  spec = env.observation_spec()
  assert spec['pixels'].shape == (SIZE, SIZE, 3) and spec['pixels'].dtype == np.uint8
  obs = env.reset().observation
  assert obs['pixels'].shape == (SIZE, SIZE, 3) and obs['pixels'].std() > 0
  # The Jaco arm's joints and the target, not the task's own camera image.
  assert obs['features'].dtype == np.float32 and obs['features'].shape == spec['features'].shape
  assert 10 < obs['features'].size < 100
  action_spec = env.action_spec()
  assert np.all(action_spec.minimum == -1) and np.all(action_spec.maximum == 1)


def test_a_vision_task_built_on_one_thread_runs_episodes_on_another():
  # As an actor node: built on its main thread, episodes on its work thread. A composer
  # reset recompiles the physics and frees its rendering context, which EGL ties to the
  # thread that first rendered: the task's own camera, rendered while it was built, made
  # every reset on the work thread fail. The task renders nothing of its own now.
  settings = PixelSettings(size=SIZE, frame_stack=1, features=True)
  env = make_pixel_environment('manipulation:reach_site_vision', seed=0, settings=settings)
  frames, errors = [], []

  def episodes():
    try:
      for _ in range(2):
        frames.append(env.reset().observation['pixels'])
        frames.append(env.step(np.zeros(env.action_spec().shape, np.float32)).observation['pixels'])
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
    finally:
      env.close()  # Its context is this thread's now: freed here, not by the collector.

  worker = threading.Thread(target=episodes)
  worker.start()
  worker.join()
  assert not errors, errors
  assert len(frames) == 4 and all(f.shape == (SIZE, SIZE, 3) and f.std() > 0 for f in frames)
  # Nor does it render its own 84x84 image at every step, for the wrapper to drop.
  raw_spec = pixels.load_raw('manipulation:reach_site_vision').observation_spec()
  assert not any(v.dtype == np.uint8 for v in raw_spec.values())


def test_bad_settings_and_tasks_are_one_line_errors():
  with pytest.raises(ValueError, match='frame_stack must be a positive integer'):
    PixelSettings(frame_stack=0)
  for camera in (-2, 1.0, True):
    with pytest.raises(ValueError, match=f'camera must be a camera id .* got {camera!r}$'):
      PixelSettings(camera=camera)
  with pytest.raises(ValueError, match='unknown manipulation task'):
    pixels.check_task('manipulation:juggle', pixels=True)
  with pytest.raises(ValueError, match='reach_site_vision: its observation holds camera images'):
    pixels.check_task('manipulation:reach_site_vision', pixels=False)
  pixels.check_task('manipulation:reach_site_features', pixels=False)  # a state run takes it
  with pytest.raises(ValueError, match=r'camera=2 is invalid: the task has 2 camera\(s\)'):
    make_pixel_environment('cartpole:balance', settings=PixelSettings(camera=2))


def test_no_renderer_says_which_were_tried(monkeypatch):
  monkeypatch.setenv('COLLECT_INFER_USER_MUJOCO_GL', '')
  monkeypatch.setattr(pixels, 'RENDERERS', ('nogl',))  # dm_control refuses the name
  with pytest.raises(RendererError) as e:
    pixels.choose_renderer(required=True)
  message = str(e.value)
  assert '\n' not in message and 'tried MUJOCO_GL=nogl (' in message
  assert pixels.choose_renderer(required=False) is None
  monkeypatch.setenv('COLLECT_INFER_USER_MUJOCO_GL', 'disable')
  with pytest.raises(RendererError, match='tried MUJOCO_GL=disable'):
    pixels.choose_renderer(required=True)
