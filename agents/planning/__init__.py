"""Model-based control: learned dynamics models and a model-predictive planner.

Not registered yet (no AGENT entry): the planner, the ensemble dynamics loss and the
model-to-planner adapter are here for a planning actor and a model learner to use.
"""
