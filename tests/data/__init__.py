"""Tests of transferlab.data (mirrors src/transferlab/data)."""
