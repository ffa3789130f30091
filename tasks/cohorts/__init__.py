"""Where cohorts come from: simulated, or imported from vendor CSV exports."""
