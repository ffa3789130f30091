"""Inspect stage of the audit-model flow: what an existing model expects (T, C)."""
