"""The iterated benchmark's episode length: counted from the task as the runs see it."""

import pytest

from experiments.iterated_benchmark import episode_steps


@pytest.mark.parametrize(
  'task, extra, steps',
  [
    # The suite's 1000; manipulation's 10 s limit at 0.04 s control steps.
    ('cartpole:swingup', [], 1000),
    ('manipulation:reach_site_features', ['--max_seconds', '60'], 250),
    # Through the camera: a vision task has no state environment to count, and the runs
    # count actions, each action_repeat steps of the task.
    (
      'manipulation:reach_site_vision',
      ['--pixels', '--pixel_size', '16', '--action_repeat', '2'],
      125,
    ),
  ],
)
def test_episode_steps_are_counted_as_the_runs_see_the_task(task, extra, steps):
  assert episode_steps(task, extra) == steps
