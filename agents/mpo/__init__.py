"""MPO, PMPO and PAC (`policy_loss`): a distributional actor-critic on n-step transitions."""

from agents.mpo.config import MPOConfig
from agents.mpo.presets import PRESETS
from agents.registry import AgentEntry

AGENT = AgentEntry(name='mpo', config_class=MPOConfig, builder='agents.mpo.builder:MPOBuilder',
                   presets=PRESETS, default_preset='cpu',
                   description='MPO family: --agent policy_loss=mpo, pmpo or pac')
