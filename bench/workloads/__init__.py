"""Benchmarks of running workloads on an agent (health-check overhead)."""
