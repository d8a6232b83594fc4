"""Costs: analytic MACs of token schedules and fvcore counting (the budget solver is `cliprank.methods.budget`)."""
