"""cloudless.runtime"""
