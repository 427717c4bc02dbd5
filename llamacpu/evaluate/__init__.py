"""Evaluation: hypothesis strategies, property checks of learned machines, baselines and
the pytest plugin.
"""
