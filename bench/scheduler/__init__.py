"""Scheduler benchmark: latency, throughput, memory, speed-up over the reference, and
packing quality against an exact solver. Run ``python -m bench.scheduler``."""
