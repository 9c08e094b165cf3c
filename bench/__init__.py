"""Cloudless benchmarks.

``python -m bench`` runs every suite; each writes ``bench/results/<name>.json``.
"""
