"""Environments: the dm_control suite factory and wrappers."""
