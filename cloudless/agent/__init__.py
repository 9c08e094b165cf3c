"""cloudless.agent"""
