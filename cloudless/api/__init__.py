"""cloudless.api"""
