"""Learnable tokens that recover the accuracy pruning costs (Patch Ranking's third phase)."""
