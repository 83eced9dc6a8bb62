"""The evaluator-checkpointer: evaluates the greedy policy, checkpoints, reports, ends the run."""

import collections
import pathlib
import threading
import time
from typing import Any, Dict, Optional

import acme
import launchpad as lp
from acme.utils import loggers

from agents.common.logs import get_logger
from agents.replay_pipeline import REPLAY_TABLE
from environments.pixels import default_camera
from environments.references import references, score_tasks
from environments.success import SuccessObserver, has_success
from launch import experiment
from launch.budget import Budget
from launch.logs import make_logger
from launch.nodes.process import announce_process, quiet_node_logs
from launch.nodes.stopping import exit_process_if_stuck, run_until_stopped, wait_for_stop
from launch.nodes.videos import GifRecorder
from launch.tasks import task_log_label

log = get_logger('evaluator')
# The progress line names itself, not its node: `[progress] ...`.
progress_log = get_logger('progress')


class WindowRates:
  """Per-second rates of growing counts, over at least the last `window_s` seconds.

  Actors report their steps once per episode (seconds apart), so a rate over one progress
  interval would jump between 0 and bursts; a window of several intervals smooths that.
  """

  def __init__(self, window_s: float = 60.0):
    self._window_s = window_s
    self._history = collections.deque()  # (time, counts), oldest first

  def update(self, now: float, counts: Dict[str, float]) -> Dict[str, float]:
    """Records `counts` at `now`; returns each count's rate since the window's start.

    Rates are 0 at the first call.
    """
    history = self._history
    while len(history) > 1 and now - history[1][0] >= self._window_s:
      history.popleft()
    rates = {k: 0.0 for k in counts}
    if history:
      then, before = history[0]
      dt = max(now - then, 1e-6)
      rates = {k: (v - before.get(k, 0.0)) / dt for k, v in counts.items()}
    history.append((now, dict(counts)))
    return rates


class EvaluatorWorker:
  """Every `eval_every_seconds`: M greedy episodes, then a full checkpoint.

  It is also the program's supervisor: it logs the progress line and stops the program when
  the budget is spent (after a final evaluation and checkpoint).
  """

  def __init__(self, config: Dict[str, Any], learner: Any, counter: Any, replay: Any):
    quiet_node_logs()
    announce_process('evaluator')
    cfg = experiment.config_from_dict(config)
    self._cfg = cfg
    self._budget = Budget.from_config(cfg)
    self._learner = learner
    self._counter = counter
    self._replay = replay
    self._next_replay_save = 0.0  # time.time() after which a checkpoint saves the replay
    # One GIF per evaluation (launch.nodes.videos), of its first episode; a pixel run's frames
    # are its own; a state run's are rendered from its first task's default camera.
    self._gifs = GifRecorder(
      pathlib.Path(cfg.run_dir) / 'videos',
      every=1 if cfg.pixels else 10,
      camera=default_camera(cfg.task_names[0]),
    )
    self._gifs.enabled = cfg.eval_gifs
    # One greedy actor and environment per task of the run (one without --tasks).
    self._actors, self._loops = {}, {}
    for task in cfg.task_names:
      builder = experiment.make_builder(cfg, task)
      env = experiment.make_env(cfg, seed=cfg.seed + experiment.EVAL_SEED_OFFSET, task=task)
      actor = self._actors[task] = builder.make_actor(
        learner, adder=None, seed=cfg.seed, deterministic=True
      )
      observers = [self._gifs]
      if has_success(task):  # A goal condition: its rows carry a success rate too.
        observers.append(SuccessObserver(cfg.action_repeat if cfg.pixels else 1))
      self._loops[task] = acme.EnvironmentLoop(
        env,
        actor,
        should_update=False,
        logger=loggers.NoOpLogger(),
        label='evaluator',
        observers=observers,
      )
    self._prompt_with_demonstrations(cfg)
    run_dir = pathlib.Path(cfg.run_dir)
    self._logger = make_logger(run_dir, 'evaluator', steps_key='actor_steps')
    # Several tasks: a row per task and evaluation in logs/evaluator_<task>/ as well.
    self._task_loggers = {}
    if len(self._loops) > 1:
      self._task_loggers = {
        task: make_logger(run_dir, task_log_label(task), steps_key='actor_steps')
        for task in self._loops
      }
    self._last_return: Optional[float] = None
    self._start = time.time()
    self._rates = WindowRates()
    self._stop_program = lp.stop
    self._stop = threading.Event()

  # --- pieces -------------------------------------------------------------

  def _prompt_with_demonstrations(self, cfg) -> None:
    """Actors that condition on prompts (the generalist's) are prompted, as Gato is at
    evaluation, with the best stored episode of their task in the run's data."""
    from launch.nodes.learner import store_dirs  # pylint: disable=g-import-not-at-top
    from launch.store.windows import best_demonstrations  # pylint: disable=g-import-not-at-top

    prompted = {t: a for t, a in self._actors.items() if hasattr(a, 'use_demonstration')}
    if not prompted:
      return
    best = best_demonstrations(store_dirs(cfg), list(prompted))
    for task, actor in prompted.items():
      found = best.get(task)
      if found is None:
        log.info('no stored episode of %s to prompt with: its own best episode will be', task)
        continue
      episode, episode_return = found
      try:
        used = actor.use_demonstration(episode.observations, episode.actions, episode_return)
      except ValueError as e:  # Data from elsewhere: its body may not be the task's.
        log.warning('the best stored episode of %s is not used as its prompt: %s', task, e)
        continue
      if used:
        log.info(
          'prompting %s with a stored episode of return %.1f (%s)',
          task,
          episode_return,
          episode.metadata.get('source', 'unknown source'),
        )

  def _counts(self) -> Dict[str, float]:
    counts = self._counter.get_counts()
    return {k: counts.get(k, 0) for k in ('actor_steps', 'actor_episodes', 'learner_steps')}

  def _replay_size(self) -> Optional[int]:
    try:
      return int(self._replay.server_info(timeout=5)[REPLAY_TABLE].current_size)
    except Exception:  # pylint: disable=broad-except
      return None

  def evaluate(self) -> float:
    """`eval_episodes` greedy episodes of every task; returns the mean over tasks of their
    mean return. Rows: the average (and expert-normalised score) in logs/evaluator, and
    with several tasks one per task in logs/evaluator_<task>."""
    returns, successes = {}, {}
    started_at = time.time()  # When the evaluated policy was fetched (peer_benchmark's clock).
    self._gifs.arm()  # The first episode (of the first task).
    for task, loop in self._loops.items():
      self._actors[task].update(wait=True)
      returns[task] = []
      for _ in range(self._cfg.eval_episodes):
        result = loop.run_episode()
        returns[task].append(float(result['episode_return']))
        if 'success' in result:
          successes.setdefault(task, []).append(float(result['success']))
        if self._stop.is_set():
          break
      if self._stop.is_set():
        break
    self._write_gif()
    summary = score_tasks(returns, references())
    for task, values in successes.items():
      summary['tasks'][task]['success_rate'] = sum(values) / len(values)
    if successes:
      rates = [summary['tasks'][task]['success_rate'] for task in successes]
      summary['success_rate'] = sum(rates) / len(rates)
    self._last_return = summary['mean_return']
    counts = self._counts()
    every = [r for values in returns.values() for r in values]
    row = {
      **counts,
      'mean_return': self._last_return,
      'min_return': min(every),
      'max_return': max(every),
      'elapsed_s': time.time() - self._start,
      'started_at': started_at,
    }
    for key in ('mean_score', 'success_rate'):
      if key in summary:
        row[key] = summary[key]
    self._logger.write(row)
    for task, task_row in summary['tasks'].items():
      if task in self._task_loggers:
        self._task_loggers[task].write({**counts, **task_row})
      if len(self._loops) > 1:
        score = f', score {task_row["score"]:.1f}' if 'score' in task_row else ''
        if 'success_rate' in task_row:
          score += f', success {task_row["success_rate"]:.0%}'
        log.info('  %s: mean return %.1f%s', task, task_row['mean_return'], score)
    log.info(
      '%d greedy episodes%s at %d env steps: mean return %.1f%s%s',
      self._cfg.eval_episodes,
      ' a task' if len(self._loops) > 1 else '',
      int(counts['actor_steps']),
      self._last_return,
      f', expert-normalised score {summary["mean_score"]:.1f}' if 'mean_score' in summary else '',
      f', success rate {summary["success_rate"]:.0%}' if 'success_rate' in summary else '',
    )
    return self._last_return

  def _write_gif(self) -> None:
    step = getattr(next(iter(self._actors.values())), 'policy_version', None)
    if step is None:
      step = int(self._counts()['learner_steps'])
    path = self._gifs.write(step)  # rendered and saved in the background
    if path is not None:
      log.info('evaluation video %s', path.name)

  def checkpoint(self, replay: bool = True) -> None:
    """The learner writes its own full state (one writer for the checkpoint directory), and
    the replay tables are saved with it unless that would spend more than
    `replay_checkpoint_max_share` of the run on saving them: a full table takes tens of
    seconds of the server's CPU, which every evaluation of a long run would pay."""
    path = self._learner.save_checkpoint(
      {'counts': self._counter.save(), 'last_eval_return': self._last_return}
    )
    log.info('checkpoint %s', pathlib.Path(path).name)
    if not replay or time.time() < self._next_replay_save:
      return
    start = time.time()
    try:
      self._replay.checkpoint()
    except Exception as e:  # pylint: disable=broad-except
      log.info('replay checkpoint failed: %s', e)
    took = time.time() - start
    wait = took / self._cfg.replay_checkpoint_max_share
    self._next_replay_save = time.time() + wait
    if took >= 1.0:
      log.info('replay checkpoint took %.1f s; the next one in %.0f s or more', took, wait)

  def progress(self, counts: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    now = time.time()
    counts = counts or self._counts()
    rates = self._rates.update(now, counts)
    env_rate, learn_rate = rates['actor_steps'], rates['learner_steps']
    ret = 'n/a' if self._last_return is None else f'{self._last_return:.1f}'
    budget = self._budget.actor_steps_limit
    learner_budget = self._budget.max_learner_steps
    line = (
      f'{now - self._start:7.0f}s | env steps {int(counts["actor_steps"])}'
      f'{"/" + str(budget) if budget else ""} ({env_rate:.0f}/s) | learner steps '
      f'{int(counts["learner_steps"])}{"/" + str(learner_budget) if learner_budget else ""} '
      f'({learn_rate:.1f}/s) | last eval return {ret} | replay size {self._replay_size()}'
    )
    progress_log.info('%s', line)
    return counts

  def budget_spent(self, counts: Dict[str, float]) -> bool:
    """Seconds, learner steps, environment steps (not offline) or iterations (iterated)."""
    budget = self._budget
    seconds = time.time() - self._start
    if budget.out_of_time(seconds):
      return True
    # The learner knows its own part exactly (the counter lags it), and says so only once
    # the counts it sent are final.
    learner_done = self._learner.done() if budget.ends_with_learner else None
    return budget.done(
      actor_steps=counts['actor_steps'],
      learner_steps=counts['learner_steps'],
      seconds=seconds,
      learner_done=learner_done,
    )

  # --- main loop ----------------------------------------------------------

  def run(self, stop_event: Optional[threading.Event] = None):
    stop = self._stop = stop_event or lp.stop_event()
    if self._stop_program is lp.stop:
      # Launchpad's context is thread-local: take the stopper here, in the node's thread.
      from launchpad import context as lp_context

      self._stop_program = lp_context.get_context().program_stopper
    # A call to a learner or replay that is already gone may never return.
    finished = run_until_stopped(self._supervise, stop, grace_seconds=5.0)
    self._gifs.wait(timeout=10.0)  # The last evaluation's GIF.
    log.info('stopped')
    exit_process_if_stuck(finished)

  def _supervise(self, stop: threading.Event) -> None:
    next_eval = time.time() + self._cfg.eval_every_seconds
    every_steps = self._cfg.eval_every_learner_steps
    if every_steps is None and self._cfg.mode == 'iterated':
      every_steps = self._cfg.infer_steps  # Once per iteration.
    next_eval_step = every_steps or 0
    # The budget is checked each second: a run ends at most a second after spending it
    # (two cheap calls, to the counter and the learner).
    tick = min(self._cfg.progress_every_seconds, 1.0)
    next_progress = 0.0
    while not wait_for_stop(stop, tick):
      now = time.time()
      counts = self._counts()
      if now >= next_progress:
        self.progress(counts)
        next_progress = now + self._cfg.progress_every_seconds
      if self.budget_spent(counts):
        log.info('budget reached: final evaluation and checkpoint')
        self.evaluate()
        # The replay node saves the tables when the program stops (the actors write until
        # then): saving them here too would write them twice.
        self.checkpoint(replay=False)
        self.progress()
        self._stop_program()
        return
      due_by_steps = every_steps is not None and counts['learner_steps'] >= next_eval_step
      if (now >= next_eval or due_by_steps) and counts['learner_steps'] > 0:
        self.evaluate()
        if stop.is_set():
          break  # The learner saves its own final state; it may be gone already.
        self.checkpoint()
        next_eval = time.time() + self._cfg.eval_every_seconds
        if every_steps is not None:
          next_eval_step = (counts['learner_steps'] // every_steps + 1) * every_steps
