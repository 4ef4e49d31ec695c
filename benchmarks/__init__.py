"""Benchmarks and demos for threadsession, run against a local server in its own process."""
