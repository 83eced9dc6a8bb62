"""Model-based control: a dynamics-model learner and model-predictive planning actors.

The model learner (agents.planning.learner) fits an MLP ensemble with a learned reward
head (or, model.kind='transformer', the shared transformer: agents.planning.sequence_model)
to one-step transitions from replay and the store; the planning actors
(agents.planning.actor) act by CEM or random shooting through it (agents.planning.planner,
agents.planning.model_step). Registered as `--algorithm planning`.
"""

from agents.planning.config import PlanningConfig
from agents.planning.presets import PRESETS
from agents.registry import AgentEntry

AGENT = AgentEntry(
  name='planning',
  config_class=PlanningConfig,
  builder='agents.planning.builder:PlanningBuilder',
  presets=PRESETS,
  default_preset='cpu',
  description='model-predictive control (CEM) through a learned dynamics ensemble',
)
