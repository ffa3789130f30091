"""Wiring: one flow per file, parameters composed from stage configs, and the command line."""

import logging

# A deployed run loads its flow from a file of this package. Prefect hands stethoscope's loggers
# its API handler (PREFECT_LOGGING_EXTRA_LOGGERS) but no level, so without one they inherit the
# root's WARNING and the stage lines (`labels: ...`, epochs) never reach the run's logs.
if logging.getLogger("stethoscope").level == logging.NOTSET:
    logging.getLogger("stethoscope").setLevel(logging.INFO)
