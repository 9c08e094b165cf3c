"""Cluster-scale load harness (issue 7): simulated agents against a real coordinator."""
