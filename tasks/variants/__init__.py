"""Variants of an architecture compared (docs/architecture.md §7.5): the seed's experiment loop —
train each variant on the same data with the same budget, audit each, and put them side by side
(`comparison.json`, `comparison.html`)."""
