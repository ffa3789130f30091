"""Gradient audit: the input-gradient profile around t_mid and the dependency horizon."""
