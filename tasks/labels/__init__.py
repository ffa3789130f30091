"""Labels stage: one row per user-week with coverage, device generation and the synthetic targets."""
