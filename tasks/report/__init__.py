"""Report stage: summary.json, report.html, history, Prefect artifacts and the failure event."""
