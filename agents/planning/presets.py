"""Settings of PlanningConfig for `--preset` (dotted paths, as `--agent` takes them).

'published' is the config's defaults, PETS-like sizes (Chua et al. 2018: five members of
three 200-wide layers, CEM over 500 plans of horizon 30, 5 iterations, 50 elites). 'cpu'
plans about 40x cheaper (128 plans of 12 decisions, 3 iterations, 64-wide members), so
a 1000-step episode plans in seconds on one core.
"""

PRESETS = {
  'published': {},
  'cpu': {
    'model.hidden_sizes': [64, 64],
    'planner.horizon': 12,
    'planner.num_candidates': 128,
    'planner.iterations': 3,
    'planner.num_elites': 16,
    'replay.batch_size': 128,
  },
}
