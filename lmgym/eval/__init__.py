"""Evaluation: run rollouts concurrently, stream results, summarise."""
