"""Sequences stage: fixed-length [T, C] tensors per user-week, the metadata vectors and the split."""
