"""Settings of GatoConfig for `--preset` (dotted paths, as `--agent` takes them).

'cpu' is a model of about 370k parameters (two layers of width 64; most of them the token
embedding and the logits over the 2058-token vocabulary) trained on windows of one timestep
after the conditioning (a prompt of up to 32 tokens), batch 256, at learning rate 1e-3, each
value token also embedded by its place: the recipe measured to act best on 2 cores
(experiments/results/generalist_multitask/; history did not help there, and a window of
one timestep costs a fraction of a long one). `model.context` is then only a bound.
'published' is the config's defaults.
"""

PRESETS = {
  'published': {},
  'cpu': {
    'model.model_size': 64,
    'model.num_heads': 4,
    'model.num_layers': 2,
    'model.context': 128,
    'model.value_embedding': True,
    'window.prompt_tokens': 32,
    'window.timesteps': 1,
    'replay.batch_size': 256,
    'optim.learning_rate': 1e-3,
  },
}
