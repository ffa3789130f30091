"""Activation audit: per-unit statistics, dead and constant units, heatmaps."""
