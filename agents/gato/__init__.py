"""A Gato-style generalist: one transformer over the tokens of every task's timesteps.

Not registered yet (no AGENT entry): the tokeniser (networks.tokenizer), the transformer
(networks.transformer), the loss and the action decoder are here for a builder to use.
"""
