"""cloudless.security"""
