"""Validate stage: the row gate, quarantine and great-expectations over a cohort's sensor logs."""
