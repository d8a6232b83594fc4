"""The golden ranking: greedy search over which patches to remove, and the store that keeps it."""
