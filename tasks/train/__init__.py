"""Train stage: the DeepHeart network fitted on the sequence store, checkpoints, predictions."""
