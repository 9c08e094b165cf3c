"""cloudless.observability"""
