"""Settings of GatoConfig for `--preset` (dotted paths, as `--agent` takes them).

'cpu' is a model of about 370k parameters (two layers of width 64; most of them the token
embedding and the logits over the 2058-token vocabulary) over 128-token windows, batch 32:
it trains at a usable rate on 2 cores. 'published' is the config's defaults.
"""

PRESETS = {
  'published': {},
  'cpu': {
    'model.model_size': 64,
    'model.num_heads': 4,
    'model.num_layers': 2,
    'model.context': 128,
    'window.prompt_tokens': 32,
    'replay.batch_size': 32,
    'optim.learning_rate': 3e-4,
  },
}
