"""A Gato-style generalist: one transformer over the tokens of every task's timesteps.

The tokeniser (networks.tokenizer), the transformer (networks.transformer), the loss, the
update and the action decoder are here; the builder (agents.gato.builder) trains it on
windows of stored episodes (launch.store.windows) and acts with a key-value cache.
"""

from agents.gato.config import GatoConfig
from agents.gato.presets import PRESETS
from agents.registry import AgentEntry

AGENT = AgentEntry(
  name='gato',
  config_class=GatoConfig,
  builder='agents.gato.builder:GatoBuilder',
  presets=PRESETS,
  default_preset='cpu',
  description='a Gato-style tokenised transformer policy, trained on windows of stored episodes',
)
