"""Cloudless: one elastic compute fabric from a crowd of unlike devices."""

__version__ = "0.1.0"
