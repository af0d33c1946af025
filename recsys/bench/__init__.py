"""Benchmarks: `recsys bench speed` (seconds per epoch, evaluation seconds, peak memory)."""
