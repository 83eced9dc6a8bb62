"""Builds an offline dataset (an episode store with a manifest) from a stored run.

  python -m experiments.make_dataset --run_dir runs/cartpole_swingup --kind expert \
      --episodes 20 --out datasets/cartpole_expert
  python -m experiments.make_dataset --run_dir runs/cartpole_swingup --kind mixed \
      --episodes 20 --poor_fraction 0.5 --out datasets/cartpole_mixed
  python -m experiments.make_dataset --run_dir runs/cartpole_swingup --kind random \
      --episodes 20 --out datasets/cartpole_random

Kinds:
  expert  episodes of the run's newest checkpoint (its stochastic policy, as the actors
          act; --greedy: its greedy policy, as the evaluator acts and the expert
          references were measured); --expert_noise S adds Gaussian noise of scale S
          to its actions, so the data also shows its way back from states just off
          its path (DART); with --expert_labels the noise is executed but the
          expert's own action is stored, the label for imitation (RL learners skip it);
          with --executor_run LEARNER another run's greedy policy acts and the expert's
          action is stored as the label of each state it visits (DAgger's data: the
          states a learner reaches off the expert's path, with the expert's answer)
  mixed   --poor_fraction of the episodes poor, the rest expert; poor means the
          run's oldest kept checkpoint with action noise --noise (--poor_policy
          noisy, the default) or uniformly random actions (--poor_policy random)
  random  uniformly random actions
Episodes are generated with the project's own actors on the run's task (each task
of a multi-task run). Several --run_dir make one multi-task dataset, every episode
tagged with its task; --min_expert_fraction 0.8 (expert) keeps only the episodes
with at least 80% of the task's expert return, as Gato's data was filtered:

  python -m experiments.make_dataset --run_dir runs/cartpole_swingup \
      --run_dir runs/walker_walk --kind expert --episodes 20 --min_expert_fraction 0.8 \
      --out datasets/cartpole_walker_expert

--act_on TASK runs the run's policy on another task with the same specs, such as a
physics variant of the run's task (environments/variants.py), and tags the episodes with
it: data of a body or physics the policy was not trained on.

  python -m experiments.make_dataset --run_dir runs/cartpole_swingup --kind mixed \
      --episodes 10 --act_on 'cartpole:swingup@pole_length=0.6' --out datasets/cartpole_short

The output is an episode store (train on it with --datasets OUT) and OUT/manifest.json
saying where every episode came from and its return, and per task what was kept.
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

KINDS = ('expert', 'mixed', 'random')


def _with_noise(action, noise: float, rng, spec, dtype):
  """`action` plus Gaussian noise of scale `noise` from `rng`, clipped to `spec`'s bounds."""
  import numpy as np

  noisy = action + noise * rng.standard_normal(np.shape(action))
  return np.clip(noisy, spec.minimum, spec.maximum).astype(dtype)


class _NoisyActor:
  """Wraps an actor: adds Gaussian noise to its actions, clipped to the action bounds."""

  def __init__(self, actor, noise: float, spec, seed: int):
    import numpy as np

    self._actor, self._noise, self._spec = actor, noise, spec
    self._rng = np.random.default_rng(seed)

  def select_action(self, observation):
    action = self._actor.select_action(observation)
    return _with_noise(action, self._noise, self._rng, self._spec, action.dtype)

  def observe_first(self, timestep):
    pass

  def observe(self, action, next_timestep):
    pass

  def update(self, wait: bool = False):
    pass


class _NoisyExecution:
  """Wraps an environment: executes each action plus Gaussian noise, clipped to the bounds.

  The actor (and so the store's recorder) sees only the action it chose: the stored action
  is the expert's label for the state, while the states come from the noisy execution.
  """

  def __init__(self, env, noise: float, spec, seed: int):
    import numpy as np

    self._env, self._noise, self._spec = env, noise, spec
    self._rng = np.random.default_rng(seed)

  def step(self, action):
    return self._env.step(_with_noise(action, self._noise, self._rng, self._spec, self._spec.dtype))

  def __getattr__(self, name):
    return getattr(self._env, name)


class _ExecutedBy:
  """Wraps an environment: executes another policy's action (clipped), whatever is asked.

  The actor asking (the expert, whose recorder stores its action) labels the states that
  `executor`, acting greedily, visits: DAgger's data. With `share` < 1 each step's action
  is the executor's with that probability, else the expert's own (DAgger's mixture, its
  beta = 1 - share): the episodes then also reach states the executor alone never does.
  """

  def __init__(self, env, executor, spec, share: float = 1.0, seed: int = 0):
    import numpy as np

    self._env, self._executor, self._spec, self._share = env, executor, spec, share
    self._rng = np.random.default_rng(seed)
    self._last = None

  def reset(self):
    self._last = self._env.reset()
    self._executor.observe_first(self._last)
    return self._last

  def step(self, action):
    from environments.actions import clip_action

    # The executor is asked at every step, so that its own state (a context) follows the
    # episode whoever acts.
    executed = clip_action(self._executor.select_action(self._last.observation), self._spec)
    if self._share < 1.0 and self._rng.random() >= self._share:
      executed = action  # The label (clipped by the expert's actor) is executed this step.
    self._last = self._env.step(executed)
    self._executor.observe(executed, self._last)
    return self._last

  def __getattr__(self, name):
    return getattr(self._env, name)


class _RandomActor(_NoisyActor):
  """Uniformly random actions within the bounds."""

  def __init__(self, spec, seed: int):
    super().__init__(None, 0.0, spec, seed)

  def select_action(self, observation):
    del observation
    return self._rng.uniform(self._spec.minimum, self._spec.maximum).astype(self._spec.dtype)


class _Collected:
  """A store writer's `append`, into memory: episodes are filtered before they are stored."""

  def __init__(self):
    self.episodes = []

  def append(self, episode) -> None:
    self.episodes.append(episode)


def run_seed(seed: int, index: int) -> int:
  """The seed the `index`-th of build_dataset's run_dirs generates its episodes with: that
  run alone, built with this seed, gives the same episodes of its task."""
  return seed + 1000 * index


def build_dataset(
  run_dir: Union[str, Sequence[str]],
  kind: str,
  episodes: int,
  out: str,
  poor_fraction: float = 0.5,
  noise: float = 0.3,
  seed: int = 0,
  poor_policy: str = 'noisy',
  min_expert_fraction: Optional[float] = None,
  act_on: Optional[str] = None,
  greedy: bool = False,
  expert_noise: float = 0.0,
  expert_labels: bool = False,
  executor_run: Union[None, str, Sequence[str]] = None,
  executor_share: float = 1.0,
) -> Dict[str, Any]:
  """Generates the episodes into a new store at `out`; returns the manifest.

  `greedy`: the newest checkpoint's episodes act greedily (the policy's mean), not sampled.
  `expert_noise` > 0: Gaussian noise of that scale is added to the newest checkpoint's
  actions (then clipped) and stored as executed: its episodes then also visit states just
  off its own path and show how it comes back from them (DART's argument for imitation).
  `expert_labels` (with `expert_noise`): the environment executes the noisy action but the
  store holds the checkpoint's own action, the expert's label for each state (DART proper):
  data for imitation only, as its actions are not the executed ones (episodes say
  `action_label: expert`; the RL learners leave them out).
  `executor_run` (kind expert; one run or several, together holding every task): in each
  episode that run's newest checkpoint acts greedily, as its evaluator does, and the store
  holds the expert's action at each state it visits (DAgger: a learner's own mistakes,
  labelled by the expert). Labelled as above; every episode is kept, whatever its return
  (the executor's), so `min_expert_fraction` does not go with it. `executor_share` < 1:
  at each step the executor acts with that probability, else the expert (DAgger's mixture).

  `act_on` (one single-task run only): the task the policy acts on instead of the run's,
  with the same observation and action specs (a physics variant of it, say); episodes
  are tagged with it.

  `run_dir` may name several runs: each gives `episodes` episodes of each of its tasks
  (every task of a multi-task run), so one dataset holds several tasks, each episode
  tagged with its own. `min_expert_fraction` (kind expert) keeps only episodes whose return
  is at least that fraction of the task's expert return (Gato kept those >= 0.8): the
  expert mean of environments/expert_references.json, else the mean return of the
  episodes generated here.
  """
  from agents.common.errors import ConfigError
  from environments.references import references
  from launch.store.episodes import EpisodeStore

  if kind not in KINDS:
    raise ConfigError(f'kind={kind!r} is invalid: must be one of {", ".join(KINDS)}')
  if episodes < 1:
    raise ConfigError(f'episodes={episodes} is invalid: must be >= 1')
  if poor_policy not in ('noisy', 'random'):
    raise ConfigError(f"poor_policy={poor_policy!r} is invalid: must be 'noisy' or 'random'")
  if not (math.isfinite(expert_noise) and expert_noise >= 0.0) or (
    expert_noise and kind == 'random'
  ):
    raise ConfigError(
      f'expert_noise={expert_noise} is invalid: must be a finite number >= 0, with kind '
      'expert or mixed'
    )
  if expert_labels and not expert_noise:
    raise ConfigError('expert_labels is invalid without expert_noise > 0 (nothing to label)')
  if not 0.0 <= poor_fraction <= 1.0:
    raise ConfigError(f'poor_fraction={poor_fraction} is invalid: must be in [0, 1]')
  if min_expert_fraction is not None and (kind != 'expert' or not min_expert_fraction > 0):
    raise ConfigError(
      f'min_expert_fraction={min_expert_fraction} is invalid: must be > 0, with kind expert'
    )
  run_dirs = [run_dir] if isinstance(run_dir, (str, os.PathLike)) else list(run_dir)
  if not run_dirs:
    raise ConfigError('run_dir: name at least one run')
  executor_runs = (
    [executor_run] if isinstance(executor_run, (str, os.PathLike)) else list(executor_run or ())
  )
  if executor_runs and (kind != 'expert' or expert_noise or min_expert_fraction is not None):
    raise ConfigError(
      'executor_run: goes with kind expert only, without expert_noise (the executor makes '
      "the states) and min_expert_fraction (its returns are the executor's; DAgger keeps "
      'every episode)'
    )
  if not (math.isfinite(executor_share) and 0.0 < executor_share <= 1.0) or (
    executor_share < 1.0 and not executor_runs
  ):
    raise ConfigError(
      f'executor_share={executor_share} is invalid: must be in (0, 1], below 1 only with '
      'executor_run'
    )
  if executor_runs and act_on is not None:
    raise ConfigError('executor_run: not with act_on (the executor acts on its own tasks)')
  out_path = pathlib.Path(out).resolve()
  if out_path.exists() and any(out_path.iterdir()):
    raise ConfigError(f'{out} exists and is not empty; choose a new --out')
  if act_on is not None and (len(run_dirs) != 1 or len(_run_config(run_dirs[0]).task_names) != 1):
    raise ConfigError('act_on: takes one run of one task')
  tasks = [task for path in run_dirs for task in _run_config(path).task_names]
  if act_on is not None:
    tasks = [act_on]
  duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
  if duplicates:
    raise ConfigError(f'run_dir: task(s) {", ".join(duplicates)} come from more than one run')
  executors = _executors_by_task(executor_runs, tasks) if executor_runs else {}
  generated = []  # (run, task, [(episode, entry)]), all generated before any is stored
  for i, path in enumerate(run_dirs):
    generated.extend(
      _generate(
        path,
        kind,
        episodes,
        poor_fraction,
        noise,
        run_seed(seed, i),
        poor_policy,
        act_on,
        greedy,
        expert_noise,
        expert_labels,
        executors,
        executor_share,
      )
    )

  store = EpisodeStore(out_path)
  writer = store.writer('make_dataset')
  entries, per_task = [], {}
  refs = references()
  for run, task, pairs in generated:
    returns = [entry['episode_return'] for _, entry in pairs]
    summary = {'from_run': run, 'generated': len(pairs)}
    keep = [True] * len(pairs)
    if min_expert_fraction is not None:
      if task in refs:
        expert, source = refs[task].expert, 'environments/expert_references.json'
      else:
        expert, source = sum(returns) / len(returns), 'the mean of these generated episodes'
      threshold = min_expert_fraction * expert
      keep = [r >= threshold for r in returns]
      summary.update(
        expert_return=expert,
        expert_return_from=source,
        threshold=threshold,
        dropped_returns=[r for r, k in zip(returns, keep) if not k],
      )
    for (episode, entry), kept in zip(pairs, keep):
      if kept:
        writer.append(episode)
        entries.append(entry)
    summary['num_episodes'] = sum(keep)
    kept_returns = [r for r, k in zip(returns, keep) if k]
    summary['mean_return'] = sum(kept_returns) / len(kept_returns) if kept_returns else None
    per_task[task] = summary
  writer.close()
  returns = [e['episode_return'] for e in entries]
  manifest = {
    'kind': kind,
    'task': tasks[0] if len(tasks) == 1 else None,
    'from_run': generated[0][0] if len(run_dirs) == 1 else None,
    'tasks': per_task,
    'episodes': entries,
    'num_episodes': len(entries),
    'mean_return': sum(returns) / len(returns) if returns else None,
    'min_expert_fraction': min_expert_fraction,
    'poor_fraction': poor_fraction if kind == 'mixed' else None,
    'noise': noise if kind == 'mixed' else None,
    'poor_policy': poor_policy if kind == 'mixed' else None,
    'greedy': greedy,
    'expert_noise': expert_noise,
    'expert_labels': expert_labels or bool(executor_runs),
    'executor_runs': sorted(set(executors.values())),
    'executor_share': executor_share if executor_runs else None,
    'seed': seed,  # Run i generated with run_seed(seed, i).
    'created': time.time(),
  }
  (out_path / 'manifest.json').write_text(json.dumps(manifest, indent=1))
  return manifest


def _run_config(run_dir: str) -> Any:
  """The stored ExperimentConfig of a run; ConfigError when it is not a run directory."""
  from agents.common.errors import ConfigError
  from launch.config import ExperimentConfig
  from launch.run_dir import RunDir

  rd = RunDir(os.path.abspath(run_dir))
  if not rd.exists():
    raise ConfigError(f'{run_dir} is not a run directory (no config.json)')
  return ExperimentConfig.from_dict(rd.read_config())


def _executors_by_task(executor_runs: Sequence[str], tasks: Sequence[str]) -> Dict[str, str]:
  """Each task's executor run (its absolute path); ConfigError naming executor_run when a
  task has none or two."""
  from agents.common.errors import ConfigError

  found: Dict[str, str] = {}
  for path in executor_runs:
    for task in _run_config(path).task_names:
      if task in tasks and task in found:
        raise ConfigError(f'executor_run: {task} is a task of more than one executor run')
      found[task] = os.path.abspath(path)
  missing = [task for task in tasks if task not in found]
  if missing:
    raise ConfigError(
      f'executor_run: no executor run acts on {", ".join(missing)} (each task needs one)'
    )
  return {task: found[task] for task in tasks}


def _executor(run_dir: str, task: str, env: Any, seed: int) -> Tuple[Any, int]:
  """The greedy actor of `run_dir`'s newest checkpoint for `task` (prompted as its
  evaluator prompts it) and that checkpoint's step. Its files are another run's: no pickles."""
  from agents.common.errors import ConfigError
  from agents.variable_client import FixedVariables, acting_params
  from experiments.evaluate_checkpoints import prompt_as_the_evaluator
  from launch import experiment
  from launch.checkpointing import Checkpointer
  from launch.run_dir import RunDir

  cfg = _run_config(run_dir)
  rd = RunDir(run_dir)
  ckpt = Checkpointer(rd.checkpoints, read_pickles=False)
  steps = ckpt.all_steps()
  if not steps:
    raise ConfigError(f'executor_run: {run_dir} has no checkpoint to act with')
  builder = experiment.make_builder(cfg, task)
  _check_same_specs(builder.spec, env, task, task)
  state = ckpt.restore(steps[-1])['learner_state']
  actor = builder.make_actor(
    FixedVariables(acting_params(state)), adder=None, seed=seed, deterministic=True
  )
  actor.update(wait=True)
  if hasattr(actor, 'use_demonstration'):
    stores = [rd.store] + [pathlib.Path(d) for d in cfg.datasets]
    prompt_as_the_evaluator(actor, stores, task)
  return actor, steps[-1]


def _check_same_specs(spec: Any, env: Any, task: str, run_task: str) -> None:
  """ConfigError naming the first field where `env`'s specs differ from the run's."""
  from acme import specs

  from agents.common.errors import ConfigError

  theirs = specs.make_environment_spec(env)
  for field in ('observations', 'actions'):
    ours, other = getattr(spec, field), getattr(theirs, field)
    if (ours.shape, ours.dtype) != (other.shape, other.dtype):
      raise ConfigError(
        f'act_on: {task} has {field} of shape {other.shape} and dtype {other.dtype}, the '
        f"run's {run_task} {ours.shape} and {ours.dtype}: its policy cannot act there"
      )


def _generate(
  run_dir: str,
  kind: str,
  episodes: int,
  poor_fraction: float,
  noise: float,
  seed: int,
  poor_policy: str,
  act_on: Optional[str] = None,
  greedy: bool = False,
  expert_noise: float = 0.0,
  expert_labels: bool = False,
  executors: Optional[Dict[str, str]] = None,
  executor_share: float = 1.0,
) -> List[Tuple[str, str, List[Tuple[Any, Dict[str, Any]]]]]:
  """(run, task, [(episode, manifest entry)]) for each task of the run (or for `act_on`,
  with the run's one task's policy), in memory; `executors`: the run acting in each task's
  episodes, the expert labelling."""
  import acme
  from acme import specs
  from acme.utils import loggers

  from agents.common.errors import ConfigError
  from agents.variable_client import FixedVariables, acting_params
  from environments.actions import ExecutedActionActor
  from launch import experiment
  from launch.checkpointing import Checkpointer
  from launch.run_dir import RunDir
  from launch.store.recorder import EpisodeRecorder

  rd = RunDir(os.path.abspath(run_dir))
  cfg = _run_config(run_dir)
  # Another run's files cross the trust boundary: no pickles (convert trusted ones first).
  ckpt = Checkpointer(rd.checkpoints, read_pickles=False)
  steps = ckpt.all_steps()
  if kind != 'random' and not steps:
    raise ConfigError(f'{run_dir} has no checkpoint to generate {kind} episodes from')
  params = {}

  def restored(step: int) -> Any:
    if step not in params:
      params[step] = acting_params(ckpt.restore(step)['learner_state'])
    return params[step]

  out = []
  for task in [act_on] if act_on is not None else cfg.task_names:
    builder = experiment.make_builder(cfg, cfg.task_names[0] if act_on else task)
    env = experiment.make_env(cfg, seed=seed + 777, task=task)
    if act_on is not None:
      _check_same_specs(builder.spec, env, act_on, cfg.task_names[0])
    # The task's own actions (a run of several tasks acts through a placed layout).
    env_actions = specs.make_environment_spec(env).actions

    def policy_actor(
      step: int,
      noise_scale: float,
      actor_seed: int,
      deterministic: bool = False,
      builder=builder,
      env_actions=env_actions,
    ):
      actor = builder.make_actor(
        FixedVariables(restored(step)), adder=None, seed=actor_seed, deterministic=deterministic
      )
      return _NoisyActor(actor, noise_scale, env_actions, actor_seed) if noise_scale else actor

    num_poor = int(round(poor_fraction * episodes)) if kind == 'mixed' else 0
    plan = []  # (source description, actor factory)
    for i in range(episodes):
      if kind == 'random' or (i < num_poor and poor_policy == 'random'):
        plan.append(
          (
            {'policy': 'random'},
            lambda i=i, b=builder: _RandomActor(b.spec.actions, seed + i),
          )
        )
      elif i < num_poor:
        plan.append(
          (
            {'policy': 'early_checkpoint_noisy', 'checkpoint_step': steps[0], 'noise': noise},
            lambda i=i, f=policy_actor: f(steps[0], noise, seed + i),
          )
        )
      else:
        source = {'policy': 'final_checkpoint', 'checkpoint_step': steps[-1], 'greedy': greedy}
        if expert_noise:
          source['noise'] = expert_noise
        if expert_labels:
          # The noise goes into the environment; the actor's own action is stored.
          source['action_label'] = 'expert'
        if task in (executors or {}):
          source.update(
            action_label='expert', executor_run=executors[task], executor_share=executor_share
          )
        in_actor = 0.0 if expert_labels else expert_noise
        plan.append(
          (source, lambda i=i, f=policy_actor, n=in_actor: f(steps[-1], n, seed + i, greedy))
        )

    # With expert labels, one noise stream through the task's episodes (its seed that of
    # the first pilots, so their dataset is rebuilt exactly).
    labelled_env = (
      _NoisyExecution(env, expert_noise, env_actions, seed + 777 + 99991) if expert_labels else None
    )
    if task in (executors or {}):
      executor, executor_step = _executor(executors[task], task, env, seed + 555)
      labelled_env = _ExecutedBy(env, executor, env_actions, executor_share, seed + 555)
      for source, _ in plan:
        source['executor_step'] = executor_step
    collected = _Collected()
    pairs = []
    start = time.time()
    for i, (source, make_actor) in enumerate(plan):
      recorder = EpisodeRecorder(
        collected,
        metadata={'source': f'{kind}_dataset', 'task': task, 'from_run': str(rd.path), **source},
      )
      # The store holds the executed (clipped) action, as for every source, except with
      # expert labels: then the expert's own (clipped) action, the noise added after it.
      actor = ExecutedActionActor(make_actor(), builder.spec.actions)
      acting_env = labelled_env if source.get('action_label') == 'expert' else env
      loop = acme.EnvironmentLoop(
        acting_env, actor, should_update=False, observers=[recorder], logger=loggers.NoOpLogger()
      )
      result = loop.run_episode()
      entry = {
        **source,
        'task': task,
        'episode_return': float(result['episode_return']),
        'length': int(result['episode_length']),
      }
      pairs.append((collected.episodes[-1], entry))
      print(
        f'[dataset] {task} episode {i + 1}/{episodes} ({source["policy"]}): '
        f'return {result["episode_return"]:.1f} ({time.time() - start:.0f}s)',
        flush=True,
      )
    out.append((str(rd.path), task, pairs))
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    '--run_dir',
    required=True,
    action='append',
    help='the run whose task(s) and checkpoints to use; repeat it for a multi-task dataset',
  )
  p.add_argument('--kind', required=True, choices=KINDS)
  p.add_argument('--episodes', type=int, default=20)
  p.add_argument('--out', required=True, help='a new directory for the dataset')
  p.add_argument('--poor_fraction', type=float, default=0.5, help='mixed: share of poor episodes')
  p.add_argument('--noise', type=float, default=0.3, help='mixed: action noise of poor episodes')
  p.add_argument(
    '--poor_policy',
    choices=['noisy', 'random'],
    default='noisy',
    help='mixed: what acts in the poor episodes',
  )
  p.add_argument(
    '--min_expert_fraction',
    type=float,
    default=None,
    help="expert: keep only episodes with a return >= this fraction of the task's expert "
    "return (the reference file, else these episodes' mean), e.g. 0.8 as Gato",
  )
  p.add_argument(
    '--act_on',
    default=None,
    help="a task with the run's specs to act on instead of the run's own, e.g. a physics "
    "variant 'cartpole:swingup@pole_length=0.6'",
  )
  p.add_argument(
    '--greedy',
    action='store_true',
    help="the newest checkpoint acts greedily (the evaluator's policy) instead of sampling",
  )
  p.add_argument(
    '--expert_noise',
    type=float,
    default=0.0,
    help="Gaussian noise added to the newest checkpoint's actions (stored as executed): "
    'states off its own path and its way back to it, e.g. 0.3',
  )
  p.add_argument(
    '--expert_labels',
    action='store_true',
    help="with --expert_noise: the noise is executed, the expert's own action stored as the "
    'label (DART; for behaviour cloning and the generalist only)',
  )
  p.add_argument(
    '--executor_run',
    action='append',
    default=None,
    help="expert: this run's newest checkpoint acts (greedily) and the expert's action is "
    "stored as each state's label (DAgger); repeat it to cover every task",
  )
  p.add_argument(
    '--executor_share',
    type=float,
    default=1.0,
    help="with --executor_run: the probability that a step is the executor's action, else "
    "the expert's is executed (DAgger's mixture), e.g. 0.5",
  )
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  from agents.common.errors import UserError

  try:
    manifest = build_dataset(
      args.run_dir,
      args.kind,
      args.episodes,
      args.out,
      args.poor_fraction,
      args.noise,
      args.seed,
      args.poor_policy,
      args.min_expert_fraction,
      args.act_on,
      args.greedy,
      args.expert_noise,
      args.expert_labels,
      args.executor_run,
      args.executor_share,
    )
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  mean = manifest['mean_return']
  print(
    f'[dataset] {manifest["num_episodes"]} {args.kind} episodes of '
    f'{", ".join(manifest["tasks"])}, mean return '
    f'{"n/a" if mean is None else format(mean, ".1f")}, in {args.out} (manifest.json)',
    flush=True,
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
