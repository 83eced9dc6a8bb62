"""The iterated benchmark's episode length: counted from the task, not assumed."""

import pytest

from experiments.iterated_benchmark import episode_steps


@pytest.mark.parametrize(
  'task, steps',
  # The suite's 1000; manipulation's 10 s limit at 0.04 s control steps.
  [('cartpole:swingup', 1000), ('manipulation:reach_site_features', 250)],
)
def test_episode_steps_are_counted_from_the_task(task, steps):
  assert episode_steps(task) == steps
