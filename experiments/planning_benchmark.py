"""Planning benchmark: planners through learned dynamics models trained on one dataset.

  python -m experiments.planning_benchmark --task cartpole:swingup --random_episodes 5 \\
      --store runs/cartpole_swingup/store --train_steps 5000 --out bench_out/planning

The data: --random_episodes episodes of uniformly random actions, plus every episode of
--store (an earlier run's store, e.g. an MPO run's: the states a good policy visits). For
each model of --models (the MLP ensemble, the transformer: agents.planning's model.kind) a
model learner (--preset and --agent as for collect_infer) trains on all their one-step
transitions for --train_steps, the same batches for each. Then each planner of --planners
('method:reward', e.g. cem:learned, cem:cartpole, random_shooting:learned) plans through
each model for --eval_episodes episodes of --episode_steps steps, with the planning actor
the program's evaluator uses (deterministic); its return and planning cost per
environment step (wall-clock after compilation, and model steps rolled out) are recorded.

Warm start from a policy: with `--agent planner.proposals_from=RUN_DIR` (an MPO run), a
planner named 'method:reward:proposals' also searches the policy's proposals
(planner.num_proposals), 'method:reward:proposals:value' adds the run's state value at each
plan's end too (planner.terminal_value), and the planner 'policy' is that policy alone (its
mean action), the baseline they should beat; the other planners ignore the setting.

Writes:
  <out>/planning.csv   model, planner, method, reward, horizon, action_repeat, episode,
                       return, steps, ms_per_step, model_steps_per_step, train_steps,
                       transitions, final_model_loss (a row as each episode ends)
  <out>/planning.png   return and ms per step for each model and planner
"""

import argparse
import csv
import os
import pathlib
import time
from typing import Dict, Iterator, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402

from experiments import transitions  # noqa: E402
from launch.cli import agent_setting  # noqa: E402

FIELDS = (
  'model', 'planner', 'method', 'reward', 'proposals', 'terminal_value', 'horizon',
  'action_repeat', 'episode', 'return',
  'steps', 'ms_per_step', 'model_steps_per_step', 'train_steps', 'transitions',
  'final_model_loss',
)  # fmt: skip
PROGRESS_SECONDS = 30.0  # A progress line at most this often while training and planning.


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--task', default='cartpole:swingup')
  p.add_argument('--random_episodes', type=int, default=5)
  p.add_argument('--store', default=None, help='an episode store whose episodes join the data')
  p.add_argument('--train_steps', type=int, default=5000)
  p.add_argument('--models', default='ensemble,transformer')
  p.add_argument('--planners', default='cem:learned,random_shooting:learned,cem:cartpole')
  p.add_argument('--eval_episodes', type=int, default=1)
  p.add_argument('--episode_steps', type=int, default=1000)
  p.add_argument('--preset', default='cpu')
  p.add_argument(
    '--agent',
    action='append',
    default=[],
    type=agent_setting,
    help='FIELD=VALUE, as collect_infer',
  )
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='bench_out/planning')
  args = p.parse_args(argv)
  from agents.common.errors import ConfigError
  from agents.planning.config import PlanningConfig

  proposals_from = dict(args.agent).get('planner.proposals_from', '')
  args.planner_list, args.policy_baseline = [], False
  for name in args.planners.split(','):
    name = name.strip()
    method, reward, *extras = name.split(':') + ([''] if ':' not in name else [])
    if name == 'policy' or extras:
      if not proposals_from:
        p.error(f'--planners: {name!r} needs --agent planner.proposals_from=RUN_DIR')
    if name == 'policy':
      args.policy_baseline = True
      continue
    if extras not in ([], ['proposals'], ['proposals', 'value']):
      p.error(f"--planners: {name!r}: after method:reward only ':proposals[:value]'")
    try:  # Checked before any work: a typo fails now, not after the training.
      PlanningConfig.from_dict({'planner.method': method, 'planner.reward': reward or 'learned'})
    except ConfigError as e:
      p.error(f'--planners: {name!r}: {e}')
    args.planner_list.append((name, method, reward or 'learned'))
  args.model_list = [m.strip() for m in args.models.split(',')]
  for kind in args.model_list:
    try:
      PlanningConfig.from_dict({'model.kind': kind, 'planner.reward': 'cartpole'})
    except ConfigError as e:
      p.error(f'--models: {kind!r}: {e}')
  return args


def _transitions(args, env_factory) -> Dict[str, np.ndarray]:
  """One-step transitions of the random episodes and the store's episodes, concatenated."""
  parts = []
  if args.random_episodes:
    parts.append(transitions.random_transitions(env_factory, args.random_episodes, args.seed))
  if args.store:
    parts.append(transitions.store_transitions(args.store))
  if not parts:
    raise SystemExit('no data: pass --random_episodes above 0 or a --store')
  return transitions.concatenate(parts)


def play(
  builder, learner, env_factory, episodes: int, seed: int, label: str = ''
) -> Iterator[Dict[str, float]]:
  """Each deterministic episode's row as it ends, with a progress line while it runs."""
  actor = builder.make_actor(learner, adder=None, seed=seed, deterministic=True)
  yield from play_actor(actor, env_factory, episodes, seed, label)


class PolicyActor:
  """A ProposalPolicy acting alone: its mean action, within the bounds."""

  def __init__(self, policy, spec):
    import jax

    self._act = jax.jit(lambda params, obs: policy.apply(params, obs[None])[0][0])
    self._params = policy.params
    self._bounds = (spec.actions.minimum, spec.actions.maximum)

  def select_action(self, observation):
    action = np.asarray(self._act(self._params, np.asarray(observation, np.float32)))
    return np.clip(action, *self._bounds).astype(np.float32)

  def observe_first(self, timestep):
    pass

  def observe(self, action, next_timestep):
    pass


def play_actor(actor, env_factory, episodes: int, seed: int, label: str = ''):
  """play's episodes for any actor."""
  for episode in range(episodes):
    env = env_factory(seed + 10_000 + episode)
    timestep = env.reset()
    actor.observe_first(timestep)
    total, steps, planning_s = 0.0, 0, 0.0
    next_progress = time.time() + PROGRESS_SECONDS
    while not timestep.last():
      if time.time() >= next_progress:
        next_progress = time.time() + PROGRESS_SECONDS
        print(f'  {label} episode {episode}: step {steps}, return so far {total:.1f}', flush=True)
      start = time.perf_counter()
      action = actor.select_action(timestep.observation)
      if steps > 0 or episode > 0:  # The first call compiles.
        planning_s += time.perf_counter() - start
      timestep = env.step(action)
      actor.observe(action, timestep)
      total += float(timestep.reward)
      steps += 1
    timed = steps - (1 if episode == 0 else 0)
    yield {'episode': episode, 'return': total, 'steps': steps,
           'ms_per_step': 1000 * planning_s / max(timed, 1)}  # fmt: skip


def _plot(rows: List[Dict], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  repeat = lambda r: f' x{r["action_repeat"]}' if int(r['action_repeat']) > 1 else ''
  label = lambda r: f'{r["model"]}\n{r["planner"]}{repeat(r)}'
  planners = list(dict.fromkeys(label(r) for r in rows))
  mean = lambda key, p: np.mean([r[key] for r in rows if label(r) == p])
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
  left.bar(planners, [mean('return', p) for p in planners])
  left.set_ylabel('episode return')
  right.bar(planners, [mean('ms_per_step', p) for p in planners])
  right.set_ylabel('planning ms per env step')
  for ax in (left, right):
    ax.tick_params(axis='x', rotation=20)
  fig.suptitle(f'planners through models trained on {rows[0]["transitions"]} transitions')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  from acme import specs, wrappers
  from acme.utils import loggers

  from agents import registry
  from agents.common.config import merge_overrides
  from agents.planning.builder import PlanningBuilder
  from agents.planning.config import PlanningConfig
  from environments.suite import make_environment
  from launch.borrowed_policy import lend_policy, load_policy

  def env_factory(seed: int):
    env = make_environment(args.task, seed=seed)
    return wrappers.StepLimitWrapper(env, step_limit=args.episode_steps)

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  entry = registry.get('planning')
  agent = [{k: v} for k, v in args.agent]
  base = merge_overrides(PlanningConfig, entry.preset(args.preset), *agent)
  proposals_from = base.get('planner.proposals_from', '')
  spec = specs.make_environment_spec(make_environment(args.task, seed=0))
  data = _transitions(args, env_factory)
  print(f'{len(data["reward"])} transitions; training {args.train_steps} steps', flush=True)

  rows = []
  csv_file = open(out / 'planning.csv', 'w', newline='')  # Each row as it comes.
  writer = csv.DictWriter(csv_file, fieldnames=FIELDS)
  writer.writeheader()
  for kind in args.model_list:
    planners = args.planner_list
    model_config = {**base, 'model.kind': kind, 'planner.reward': planners[0][2]}
    model_config['planner.proposals_from'] = ''  # Each planner below says whether it has it.
    builder = PlanningBuilder(PlanningConfig.from_dict(model_config), spec)
    logger = loggers.InMemoryLogger()
    batches = transitions.batches(data, builder.config.replay.batch_size, args.seed)
    learner = builder.make_learner(batches, seed=args.seed, logger=logger)
    start = next_progress = time.time()
    for step in range(1, args.train_steps + 1):
      learner.step()
      if time.time() >= next_progress + PROGRESS_SECONDS or step == args.train_steps:
        next_progress = time.time()
        loss = float(np.mean([r['model_loss'] for r in logger.data[-100:]]))
        print(f'{kind}: step {step}/{args.train_steps}, model loss {loss:.3f}, '
              f'{time.time() - start:.0f} s', flush=True)  # fmt: skip
    final_loss = float(np.mean([r['model_loss'] for r in logger.data[-100:]]))
    print(f'{kind}: model loss {logger.data[0]["model_loss"]:.3f} -> {final_loss:.3f}')
    for name, method, reward in planners:
      config = PlanningConfig.from_dict(
        {**model_config, 'planner.method': method, 'planner.reward': reward,
         'planner.proposals_from': proposals_from if ':proposals' in name else '',
         'planner.terminal_value': name.endswith(':value')}
      )  # fmt: skip
      p = config.planner
      # Both methods roll out candidates * iterations plans; a plan of horizon *
      # action_repeat model steps serves action_repeat env steps.
      model_steps = p.num_candidates * p.iterations * p.horizon
      planner_builder = PlanningBuilder(config, spec)
      lend_policy(planner_builder)
      episodes = play(
        planner_builder, learner, env_factory, args.eval_episodes, args.seed, f'{kind} {name}'
      )
      for row in episodes:
        row.update(
          model=kind, planner=name, method=method, reward=p.reward, horizon=p.horizon,
          proposals=p.num_proposals if p.proposals_from else 0, terminal_value=p.terminal_value,
          action_repeat=p.action_repeat,
          train_steps=args.train_steps, model_steps_per_step=model_steps,
          transitions=len(data['reward']), final_model_loss=final_loss,
        )  # fmt: skip
        rows.append(row)
        writer.writerow(row)
        csv_file.flush()
        print(f'{kind} {name}: return {row["return"]:.1f} over {row["steps"]} steps, '
              f'{row["ms_per_step"]:.1f} ms per step', flush=True)  # fmt: skip
  if args.policy_baseline:
    policy = load_policy(proposals_from, spec, 'agent.planner.proposals_from')
    label = f'the policy of {proposals_from}'
    for row in play_actor(PolicyActor(policy, spec), env_factory, args.eval_episodes, args.seed,
                          label):  # fmt: skip
      row.update(model='none', planner='policy', method='policy', reward='', proposals=0,
                 terminal_value=False,
                 horizon=0, action_repeat=1, model_steps_per_step=0, train_steps=0,
                 transitions=len(data['reward']), final_model_loss='')  # fmt: skip
      rows.append(row)
      writer.writerow(row)
      csv_file.flush()
      print(f'{label}: return {row["return"]:.1f} over {row["steps"]} steps', flush=True)
  csv_file.close()
  if not rows:
    print('nothing ran: name a planner in --planners')
    return 1
  _plot(rows, out / 'planning.png')
  print(f'wrote {out / "planning.csv"} and {out / "planning.png"}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
