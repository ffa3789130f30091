"""The three audits of a trained network: synthetic-target learnability, activations, gradients."""
