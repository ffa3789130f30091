"""Simulate: a synthetic cohort with planted effects."""
