"""Structured (channel) pruning: dependency analysis."""
