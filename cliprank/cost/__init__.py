"""Costs: analytic MACs of token schedules, fvcore counting, and the budget solver."""
