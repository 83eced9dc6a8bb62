"""Haiku modules: MLP torsos, Gaussian policy heads, distributional critic heads."""
