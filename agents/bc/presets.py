"""Settings of BCConfig for `--preset`: the policy network, optimiser and batch of the MPO
presets of the same name (agents/mpo/presets.py), so BC and MPO runs compare like for like."""

PRESETS = {
    'published': {},
    'cpu': {'policy_layer_sizes': [256, 256], 'replay.batch_size': 128, 'learning_rate': 3e-4},
}
