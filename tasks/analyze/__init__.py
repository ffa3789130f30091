"""Analyze stage: the prediction analysis (metadata baseline, losses, strata)."""
