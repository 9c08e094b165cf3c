"""cloudless.store"""
