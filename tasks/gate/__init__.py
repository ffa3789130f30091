"""The nightly gate: this run against a reference run (docs/architecture.md §7.4). Every run
stores a small profile of its data (`profile.py`); the gate compares tonight's profile with
the reference run's (`drift.py`: features per device generation, the device mix, quarantine
rates) and the model's results with the reference's, so a run that got worse, or whose data
moved, says so without anyone re-reading last night's raw logs."""
