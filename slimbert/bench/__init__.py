"""Benchmarks: latency, accuracy and size of every artifact, measured the same way."""
