"""Import CSV: vendor CSV exports (e.g. Fitbit) turned into a cohort."""
