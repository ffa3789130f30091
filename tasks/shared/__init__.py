"""The layer below the stages: I/O, the sequence store, calendar, kernels, statistics,
figures and the retry policy. It imports no stage."""
