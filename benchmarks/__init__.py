"""Benchmarks, the bad-input battery and data generators (apart from the entry points)."""
