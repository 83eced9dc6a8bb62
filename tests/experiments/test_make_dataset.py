"""Offline datasets built from a run: real checkpoints, real physics, a real episode store."""

import json

import numpy as np
import pytest

from agents.common.errors import ConfigError
from experiments.make_dataset import build_dataset
from launch import experiment
from launch.checkpointing import Checkpointer
from launch.config import ExperimentConfig
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from tests.experiments.conftest import make_run


def test_expert_and_mixed_datasets_record_their_sources(run_with_two_checkpoints, tmp_path):
  out = tmp_path / 'mixed'
  manifest = build_dataset(
    str(run_with_two_checkpoints), 'mixed', 3, str(out), poor_fraction=1 / 3, noise=0.5
  )
  store = EpisodeStore(out)
  assert len(store) == 3 == manifest['num_episodes']
  policies = [info.metadata['policy'] for info in store.index()]
  assert policies.count('early_checkpoint_noisy') == 1 and policies.count('final_checkpoint') == 2
  steps = sorted(info.metadata['checkpoint_step'] for info in store.index())
  assert steps == [10, 20, 20]
  on_disk = json.loads((out / 'manifest.json').read_text())
  stored_returns = sorted(info.episode_return for info in store.index())
  np.testing.assert_allclose(
    sorted(e['episode_return'] for e in on_disk['episodes']), stored_returns, rtol=1e-5
  )
  episode = store.read(store.index()[0].episode_id)
  assert episode.actions.shape == (1000, 1) and episode.observations.shape == (1001, 5)
  assert np.all(np.abs(episode.actions) <= 1.0)


def test_a_greedy_expert_acts_with_the_policy_mean(run_with_two_checkpoints, tmp_path):
  from agents.variable_client import FixedVariables, acting_params

  run = str(run_with_two_checkpoints)
  manifest = build_dataset(run, 'expert', 1, str(tmp_path / 'greedy'), greedy=True)
  assert manifest['greedy'] and manifest['episodes'][0]['greedy']
  build_dataset(run, 'expert', 1, str(tmp_path / 'sampled'))
  sampled = EpisodeStore(tmp_path / 'sampled')
  greedy = EpisodeStore(tmp_path / 'greedy')
  episode = greedy.read(greedy.index()[0].episode_id)
  # Every stored action is the newest policy's greedy action at the stored observation.
  cfg = ExperimentConfig.from_dict(RunDir(run).read_config())
  params = acting_params(Checkpointer(RunDir(run).checkpoints).restore(20)['learner_state'])
  actor = experiment.make_builder(cfg).make_actor(FixedVariables(params), None, deterministic=True)
  for t in (0, 1, 500, 999):
    expected = np.clip(actor.select_action(episode.observations[t]), -1.0, 1.0)
    np.testing.assert_allclose(episode.actions[t], expected, rtol=1e-5, atol=1e-6)
  # Sampled actions are not the mean's.
  other = sampled.read(sampled.index()[0].episode_id)
  assert not np.allclose(
    other.actions[1], np.clip(actor.select_action(other.observations[1]), -1.0, 1.0)
  )
  clean = episode
  # --expert_noise: the greedy action plus Gaussian noise of that scale, stored as executed.
  manifest = build_dataset(run, 'expert', 1, str(tmp_path / 'noisy'), greedy=True, expert_noise=0.3)
  assert manifest['expert_noise'] == 0.3 and manifest['episodes'][0]['noise'] == 0.3
  noisy = EpisodeStore(tmp_path / 'noisy')
  episode = noisy.read(noisy.index()[0].episode_id)
  mean = np.stack([actor.select_action(o) for o in episode.observations[:-1]])
  inside = np.abs(mean) < 0.5  # where the clip rarely cuts the noise
  residual = (episode.actions - np.clip(mean, -1.0, 1.0))[inside]
  assert inside.sum() > 100 and 0.2 < residual.std() < 0.35 and abs(residual.mean()) < 0.1
  assert np.all(np.abs(episode.actions) <= 1.0)
  for bad in (-0.1, float('nan')):
    with pytest.raises(ConfigError, match='expert_noise'):
      build_dataset(run, 'expert', 1, str(tmp_path / f'bad{bad}'), expert_noise=bad)
  # --expert_labels: the noise is executed, the greedy action stored as the label.
  out = tmp_path / 'labelled'
  manifest = build_dataset(run, 'expert', 1, str(out), greedy=True, expert_noise=0.3,
                           expert_labels=True)  # fmt: skip
  assert manifest['expert_labels'] and manifest['episodes'][0]['action_label'] == 'expert'
  labelled = EpisodeStore(out)
  assert labelled.index()[0].metadata['action_label'] == 'expert'
  episode = labelled.read(labelled.index()[0].episode_id)
  mean = np.stack([actor.select_action(o) for o in episode.observations[:-1]])
  np.testing.assert_allclose(episode.actions, np.clip(mean, -1.0, 1.0), rtol=1e-5, atol=1e-6)
  # From the same start the states part from the noise-free greedy episode's: what was
  # executed was not what is stored.
  np.testing.assert_allclose(episode.observations[0], clean.observations[0])
  assert not np.allclose(episode.observations[20], clean.observations[20], atol=1e-3)
  with pytest.raises(ConfigError, match='expert_labels'):
    build_dataset(run, 'expert', 1, str(tmp_path / 'nolabels'), expert_labels=True)


def test_random_dataset_needs_no_checkpoint_and_bad_input_is_refused(
  tmp_path, run_with_two_checkpoints
):
  manifest = build_dataset(str(run_with_two_checkpoints), 'random', 1, str(tmp_path / 'random'))
  assert manifest['episodes'][0]['policy'] == 'random'
  with pytest.raises(ConfigError, match='not empty'):
    build_dataset(str(run_with_two_checkpoints), 'random', 1, str(tmp_path / 'random'))
  with pytest.raises(ConfigError, match='not a run directory'):
    build_dataset(str(tmp_path / 'nowhere'), 'expert', 1, str(tmp_path / 'x'))
  with pytest.raises(ConfigError, match='kind'):
    build_dataset(str(run_with_two_checkpoints), 'great', 1, str(tmp_path / 'y'))


def test_a_multi_task_dataset_from_two_runs_keeps_episodes_near_the_expert(
  run_with_two_checkpoints, tmp_path
):
  # A second run on another body (6 observations), one checkpoint.
  other = tmp_path / 'acrobot'
  make_run(other, 'acrobot:swingup', [(5, 3)])

  out = tmp_path / 'multi'
  runs = [str(run_with_two_checkpoints), str(other)]
  manifest = build_dataset(runs, 'expert', 2, str(out), min_expert_fraction=0.8)
  cartpole, acrobot = manifest['tasks']['cartpole:swingup'], manifest['tasks']['acrobot:swingup']
  # cartpole:swingup has a reference expert (859.24); an untrained policy is far below 80%.
  assert cartpole['expert_return_from'] == 'environments/expert_references.json'
  assert cartpole['threshold'] == pytest.approx(0.8 * 859.24)
  assert cartpole['num_episodes'] == 0 and len(cartpole['dropped_returns']) == 2
  # acrobot:swingup has none: 80% of the mean of its own generated episodes.
  kept = [e['episode_return'] for e in manifest['episodes']]
  generated = kept + acrobot['dropped_returns']
  assert len(generated) == acrobot['generated'] == 2
  assert acrobot['threshold'] == pytest.approx(0.8 * np.mean(generated))
  assert all(r >= acrobot['threshold'] for r in kept) and kept
  assert all(r < acrobot['threshold'] for r in acrobot['dropped_returns'])
  store = EpisodeStore(out)
  assert len(store) == manifest['num_episodes'] == len(kept)
  for info in store.index():
    episode = store.read(info.episode_id)
    assert episode.metadata['task'] == 'acrobot:swingup'
    assert episode.actions.shape == (1000, 1) and episode.observations.shape == (1001, 6)
  with pytest.raises(ConfigError, match='min_expert_fraction'):
    build_dataset(runs, 'mixed', 1, str(tmp_path / 'z'), min_expert_fraction=0.8)
  with pytest.raises(ConfigError, match='more than one run'):
    build_dataset(runs + runs[:1], 'random', 1, str(tmp_path / 'w'))


def test_a_policy_acts_on_a_physics_variant_and_a_task_of_other_specs_is_refused(
  run_with_two_checkpoints, tmp_path
):
  run = str(run_with_two_checkpoints)
  variant = 'cartpole:swingup@pole_length=0.6'
  on_variant = build_dataset(run, 'expert', 1, str(tmp_path / 'short'), act_on=variant)
  build_dataset(run, 'expert', 1, str(tmp_path / 'own'))
  assert list(on_variant['tasks']) == [variant] and on_variant['task'] == variant
  short, own = EpisodeStore(tmp_path / 'short'), EpisodeStore(tmp_path / 'own')
  assert short.index()[0].metadata['task'] == variant
  # The same policy and seed: the shorter pole alone makes the two episodes part.
  a, b = (s.read(s.index()[0].episode_id) for s in (short, own))
  np.testing.assert_array_equal(a.observations[0], b.observations[0])
  assert not np.allclose(a.observations[1:50], b.observations[1:50])
  with pytest.raises(ConfigError, match=r'act_on: walker:walk has observations of shape'):
    build_dataset(run, 'expert', 1, str(tmp_path / 'walker'), act_on='walker:walk')


def test_kept_policies_make_the_same_episodes_as_the_run(run_with_two_checkpoints, tmp_path):
  """experiments.keep_policies: the oldest and newest checkpoints cut to the policy; a
  dataset made from them holds the episodes the whole run's checkpoints give."""
  from experiments.keep_policies import keep_policies
  from launch.checkpointing import PolicyOnly, state_mismatch

  kept = keep_policies(str(run_with_two_checkpoints), str(tmp_path / 'kept'))
  ckpt = Checkpointer(kept / 'checkpoints', read_pickles=False)
  assert ckpt.all_steps() == [10, 20]
  state = ckpt.restore(20)['learner_state']
  assert isinstance(state, PolicyOnly) and int(state.steps) == 0
  whole = Checkpointer(run_with_two_checkpoints / 'checkpoints').restore(20)['learner_state']
  assert state_mismatch(whole.policy_params, state.policy_params) is None
  # Far smaller than the learner's state: no critic, targets or optimiser moments.
  sizes = [f.stat().st_size for f in (kept / 'checkpoints').glob('*.ckpt')]
  whole_size = (run_with_two_checkpoints / 'checkpoints' / 'ckpt-000000000020.ckpt').stat()
  assert max(sizes) < whole_size.st_size / 3
  ours = build_dataset(str(kept), 'mixed', 2, str(tmp_path / 'a'), poor_fraction=0.5, noise=0.5)
  theirs = build_dataset(
    str(run_with_two_checkpoints), 'mixed', 2, str(tmp_path / 'b'), poor_fraction=0.5, noise=0.5
  )
  assert [e['episode_return'] for e in ours['episodes']] == [
    e['episode_return'] for e in theirs['episodes']
  ]
  with pytest.raises(ConfigError, match='not a run directory'):
    keep_policies(str(tmp_path / 'nothing'), str(tmp_path / 'kept2'))


def test_a_kept_generalist_executor_makes_the_same_dagger_episodes(
  run_with_two_checkpoints, tmp_path
):
  """keep_policies on a multi-task generalist run: the transformer kept alone acts as the
  DAgger executor exactly as the whole run's checkpoint does."""
  from experiments.keep_policies import keep_policies

  gato = {
    'model': {'model_size': 16, 'num_heads': 2, 'num_layers': 1, 'context': 14},
    'window': {'conditioning': 'task_id', 'prompt_tokens': 0},
  }
  learner = tmp_path / 'generalist'
  tasks = 'cartpole:swingup,point_mass:easy'
  make_run(learner, 'cartpole:swingup', [(3, 1), (5, 7)], algorithm='gato', tasks=tasks, agent=gato)
  kept = keep_policies(str(learner), str(tmp_path / 'kept'), newest_only=True)
  assert Checkpointer(kept / 'checkpoints', read_pickles=False).all_steps() == [5]
  returns = []
  for executor in (learner, kept):
    manifest = build_dataset(
      str(run_with_two_checkpoints), 'expert', 2, str(tmp_path / executor.name / 'data'),
      greedy=True, executor_run=str(executor),
    )  # fmt: skip
    returns.append([e['episode_return'] for e in manifest['episodes']])
    assert manifest['episodes'][0]['executor_step'] == 5
  assert returns[0] == returns[1]
  # And a state with no policy at all is named.
  empty = tmp_path / 'no_policy'
  make_run(empty, 'cartpole:swingup')
  Checkpointer(RunDir(str(empty)).checkpoints).save({'learner_state': {'steps': 1}}, 1)
  with pytest.raises(ConfigError, match='neither policy_params nor params'):
    keep_policies(str(empty), str(tmp_path / 'kept3'))


def test_an_executor_run_acts_and_the_expert_labels_its_states(run_with_two_checkpoints, tmp_path):
  """DAgger's data: the executor's greedy episodes, each state labelled with the expert's
  greedy action."""
  from agents.variable_client import FixedVariables, acting_params

  expert = str(run_with_two_checkpoints)
  learner = tmp_path / 'learner'
  cfg = make_run(learner, 'cartpole:swingup', [(5, 7)])

  out = tmp_path / 'dagger'
  manifest = build_dataset(expert, 'expert', 1, str(out), greedy=True, executor_run=str(learner))
  entry = manifest['episodes'][0]
  assert entry['action_label'] == 'expert' and entry['executor_step'] == 5
  assert manifest['expert_labels'] and manifest['executor_runs'] == [str(learner)]
  store = EpisodeStore(out)
  assert store.index()[0].metadata['action_label'] == 'expert'
  labelled = store.read(store.index()[0].episode_id)
  # The states are the executor's own greedy episode's (same environment seed) ...
  build_dataset(str(learner), 'expert', 1, str(tmp_path / 'own'), greedy=True)
  own_store = EpisodeStore(tmp_path / 'own')
  own = own_store.read(own_store.index()[0].episode_id)
  np.testing.assert_allclose(labelled.observations, own.observations, rtol=1e-6, atol=1e-6)
  assert entry['episode_return'] == pytest.approx(own_store.index()[0].episode_return, rel=1e-5)
  # ... and every stored action is the expert's greedy action at that state, not the executor's.
  params = acting_params(Checkpointer(RunDir(expert).checkpoints).restore(20)['learner_state'])
  actor = experiment.make_builder(cfg).make_actor(FixedVariables(params), None, deterministic=True)
  expected = np.stack([actor.select_action(o) for o in labelled.observations[:-1]])
  np.testing.assert_allclose(labelled.actions, np.clip(expected, -1.0, 1.0), rtol=1e-5, atol=1e-6)
  assert not np.allclose(labelled.actions, own.actions, atol=1e-3)

  # DAgger's mixture: with executor_share ~0 the expert acts at every step, so the episode
  # is the expert's own greedy one; at 0.5 it is neither policy's alone.
  build_dataset(expert, 'expert', 1, str(tmp_path / 'clean'), greedy=True)
  clean = EpisodeStore(tmp_path / 'clean')
  clean = clean.read(clean.index()[0].episode_id)
  by_expert, half = tmp_path / 'by_expert', tmp_path / 'half'
  build_dataset(expert, 'expert', 1, str(by_expert), greedy=True, executor_run=str(learner),
                executor_share=1e-9)  # fmt: skip
  manifest = build_dataset(expert, 'expert', 1, str(half), greedy=True, executor_run=str(learner),
                           executor_share=0.5)  # fmt: skip
  assert manifest['executor_share'] == 0.5 and manifest['episodes'][0]['executor_share'] == 0.5
  (mostly_expert,), (mixed,) = (
    [s.read(i.episode_id) for i in s.index()] for s in (EpisodeStore(by_expert), EpisodeStore(half))
  )
  np.testing.assert_allclose(mostly_expert.observations, clean.observations, rtol=1e-6, atol=1e-6)
  for other in (clean, own):
    assert not np.allclose(mixed.observations[20:], other.observations[20:], atol=1e-3)
  expected = np.stack([actor.select_action(o) for o in mixed.observations[:-1]])
  np.testing.assert_allclose(mixed.actions, np.clip(expected, -1.0, 1.0), rtol=1e-5, atol=1e-6)
  for bad in (0.0, 1.5, float('nan')):
    with pytest.raises(ConfigError, match='executor_share'):
      build_dataset(expert, 'expert', 1, str(tmp_path / 'e'), executor_run=str(learner),
                    executor_share=bad)  # fmt: skip
  with pytest.raises(ConfigError, match='executor_share=0.5 is invalid'):
    build_dataset(expert, 'expert', 1, str(tmp_path / 'f'), executor_share=0.5)

  with pytest.raises(ConfigError, match='executor_run: goes with kind expert'):
    build_dataset(expert, 'mixed', 1, str(tmp_path / 'a'), executor_run=str(learner))
  with pytest.raises(ConfigError, match='executor_run: goes with kind expert'):
    build_dataset(
      expert, 'expert', 1, str(tmp_path / 'b'), executor_run=str(learner), min_expert_fraction=0.8
    )
  with pytest.raises(ConfigError, match='executor_run: no executor run acts on cartpole:swingup'):
    make_run(tmp_path / 'acrobot', 'acrobot:swingup')
    build_dataset(expert, 'expert', 1, str(tmp_path / 'c'), executor_run=str(tmp_path / 'acrobot'))
  with pytest.raises(ConfigError, match='executor_run: .* has no checkpoint'):
    make_run(tmp_path / 'empty', 'cartpole:swingup')
    build_dataset(expert, 'expert', 1, str(tmp_path / 'd'), executor_run=str(tmp_path / 'empty'))
