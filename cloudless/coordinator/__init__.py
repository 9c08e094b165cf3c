"""cloudless.coordinator"""
