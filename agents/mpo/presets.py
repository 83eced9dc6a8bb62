"""Settings of MPOConfig for `--preset` (dotted paths, as `--agent` takes them).

'published' is MPO's defaults (policy 256-256-256, critic 512-512-256, batch 256, learning
rates 1e-4, 20 action samples). 'cpu' makes each update about 4x cheaper and 3x larger so
a 2-core machine learns in minutes: on cartpole:swingup it reached 709 at 88k environment
steps and 858 at 105k (about 18 minutes). It also samples 10 actions per state, not 20,
and improves the policy on the next states with the critic target's samples
(`share_target_samples`): on walker:walk 160 updates/s on an in-memory batch against 105
with 10 samples and two target-critic passes; 80% of SAC's best return in 0.48x SAC's time
on cartpole:swingup and 0.76x on walker:walk, against 0.96x and 1.81x with 20 samples
(experiments/results/peer/). Its state runs store each transition as one packed float32 row
(`replay.packed_items`, agents/packed_items.py): the same numbers, at 0.35x the learner
pipeline's CPU a batch; its learner draws 4 batches a TensorFlow call
(`replay.batches_per_draw`). With both the learner runs at 0.96 / 0.91 of the same update
on a batch in memory (walker / cartpole), against 0.77 / 0.72 with neither
(experiments/results/throughput/, section 8). A run keeps the settings it started with
(config.json), so runs started before them resume without.
"""

PRESETS = {
  'published': {},
  'cpu': {
    'policy_layer_sizes': [256, 256],
    'critic_layer_sizes': [256, 256],
    'replay.batch_size': 128,
    'policy_learning_rate': 3e-4,
    'critic_learning_rate': 3e-4,
    'num_samples': 10,
    'share_target_samples': True,
    'replay.packed_items': True,
    'replay.batches_per_draw': 4,
  },
}
