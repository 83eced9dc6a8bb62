"""Plain behaviour cloning: the baseline for PAC's behaviour-regularised actor-critic."""

from agents.bc.config import BCConfig
from agents.bc.presets import PRESETS
from agents.registry import AgentEntry

AGENT = AgentEntry(name='bc', config_class=BCConfig, builder='agents.bc.builder:BCBuilder',
                   presets=PRESETS, default_preset='cpu',
                   description='behaviour cloning of the training data (the offline baseline)')
