"""The evaluator's GIFs: real renders of a state task, a pixel task's own frames, and a
recorder that turns itself off when it cannot render."""

import dm_env
import numpy as np
from PIL import Image

from environments.pixels import PixelSettings, make_pixel_environment
from environments.suite import make_environment
from launch.nodes.videos import GifRecorder


def _record(recorder, env, steps):
  timestep = env.reset()
  recorder.observe_first(env, timestep)
  action = np.ones(env.action_spec().shape, np.float32)
  for _ in range(steps):
    timestep = env.step(action)
    recorder.observe(env, timestep, action)


def test_state_run_renders_every_fourth_step(tmp_path):
  recorder = GifRecorder(tmp_path / 'videos', size=32, every=4)
  env = make_environment('cartpole:swingup', seed=0)
  _record(recorder, env, 10)  # not armed: nothing kept
  assert recorder.write(5) is None
  recorder.arm()
  _record(recorder, env, 11)  # steps 0..11: frames at 0, 4, 8
  path = recorder.write(1200)
  assert path == tmp_path / 'videos' / 'step_1200.gif'
  recorder.wait()
  gif = Image.open(path)
  assert (gif.n_frames, gif.size) == (3, (32, 32))
  assert gif.info['duration'] == 40  # real time: 4 control steps of 10 ms
  first = np.asarray(gif.convert('RGB'))
  gif.seek(2)
  assert not np.array_equal(first, np.asarray(gif.convert('RGB')))  # the cart moved
  assert [p.name for p in path.parent.iterdir()] == ['step_1200.gif']  # no temporary left


def test_pixel_run_keeps_its_own_frames(tmp_path):
  recorder = GifRecorder(tmp_path, every=1)
  env = make_pixel_environment(
    'cartpole:swingup', 0, PixelSettings(size=16, frame_stack=2, action_repeat=8)
  )
  recorder.arm()
  _record(recorder, env, 3)
  path = recorder.write(7)
  recorder.wait()
  gif = Image.open(path)
  assert (gif.n_frames, gif.size) == (4, (16, 16))
  assert gif.info['duration'] == 80  # each frame 8 control steps of 10 ms


class _NoPhysics(dm_env.Environment):
  def reset(self):
    return dm_env.restart(np.zeros(2, np.float32))

  def step(self, action):
    return dm_env.transition(0.0, np.zeros(2, np.float32))

  def observation_spec(self):
    return dm_env.specs.Array((2,), np.float32)

  def action_spec(self):
    return dm_env.specs.BoundedArray((1,), np.float32, -1, 1)


def test_cannot_render_turns_gifs_off(tmp_path, caplog):
  recorder = GifRecorder(tmp_path)
  recorder.arm()
  _record(recorder, _NoPhysics(), 3)
  assert not recorder.enabled and recorder.write(1) is None
  assert 'evaluation GIFs off: cannot render (AttributeError' in caplog.text
  recorder.arm()  # stays off
  _record(recorder, _NoPhysics(), 3)
  assert caplog.text.count('GIFs off') == 1
