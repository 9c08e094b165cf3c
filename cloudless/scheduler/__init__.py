"""cloudless.scheduler"""
