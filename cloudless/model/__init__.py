"""cloudless.model"""
