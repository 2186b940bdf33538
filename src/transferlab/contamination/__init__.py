"""Contamination: find evaluation examples that the (pre-)training data already holds (exact copies,
near-duplicates, nearest neighbours in an embedding space)."""
