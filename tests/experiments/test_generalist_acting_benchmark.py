"""experiments.generalist_acting_benchmark: bad flags fail before any work; the actor without
a cache acts as the program's cached actor does, through context overflows, on a real task."""

import csv

import pytest

from experiments import generalist_acting_benchmark as bench


@pytest.mark.parametrize(
  'flags, named',
  [(['--tasks', 'cartpole:jump'], 'cartpole:jump'), (['--repeats', '0'], '--repeats')],
)
def test_bad_flags_are_refused_naming_them(tmp_path, capsys, flags, named):
  with pytest.raises(SystemExit) as exit_info:
    bench.main([*flags, '--out', str(tmp_path / 'out')])
  assert exit_info.value.code == 2 and named in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()


def test_both_actors_act_alike_and_the_figures_are_written(tmp_path):
  tiny = ['model.model_size=16', 'model.num_heads=2', 'model.num_layers=1', 'model.context=28']
  out = tmp_path / 'out'
  # 7 tokens a cartpole timestep: 4 fit, so 30 steps overflow the context many times.
  args = ['--window_steps', '5', '--repeats', '1', '--check_steps', '30', '--learner_steps', '1']
  assert bench.main([*args, *sum((['--agent', t] for t in tiny), []), '--out', str(out)]) == 0
  (summary,) = list(csv.DictReader(open(out / 'summary.csv')))
  assert float(summary['same_actions']) == 1.0
  assert (summary['tokens_per_timestep'], summary['context']) == ('7', '28')
  assert float(summary['cached_steps_per_s']) > 0 and float(summary['learner_tokens_per_s']) > 0
  assert float(summary['targets_update_ratio']) > 0
  rows = list(csv.DictReader(open(out / 'acting.csv')))
  assert [r['mode'] for r in rows] == ['cached', 'full_pass']
  assert (out / 'acting.png').stat().st_size > 1000


def test_the_full_pass_context_is_what_the_cached_actor_holds_through_overflows():
  import numpy as np
  from acme import specs

  from agents.gato.builder import GatoBuilder
  from agents.gato.config import GatoConfig
  from environments.suite import make_environment

  config = GatoConfig.from_dict(
    {'model.model_size': 16, 'model.num_heads': 2, 'model.num_layers': 1, 'model.context': 28,
     'window.conditioning': 'none', 'replay.batch_size': 2}
  )  # fmt: skip
  env = make_environment('cartpole:swingup', seed=0)
  builder = GatoBuilder(config, specs.make_environment_spec(env))
  learner = builder.make_learner(iter(()), seed=0)
  cached = builder.make_actor(learner, adder=None, deterministic=True)
  full = bench.FullPassActor(
    builder.make_networks(), builder.layout, learner.get_variables(['policy'])[0], 'mean'
  )
  n = builder.layout.num_tokens
  timestep = env.reset()
  cached.observe_first(timestep)
  full.observe_first(timestep)
  for _ in range(12):  # 4 timesteps fit: rebuilt to 2, twice.
    action = cached.select_action(timestep.observation)
    np.testing.assert_array_equal(full.select_action(timestep.observation), action)
    held = np.concatenate(cached._timesteps[len(cached._timesteps) - cached._length // n :])
    np.testing.assert_array_equal(np.asarray(full._tokens)[0, : full._length], held)
    timestep = env.step(action)
  assert cached.num_rebuilds >= 3  # The episode's start and two overflows.
