"""Plain behaviour cloning: the baseline for PAC's behaviour-regularised actor-critic."""
