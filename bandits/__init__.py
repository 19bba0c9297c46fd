"""Allocation policies as pure functions: bucketing, targeting, floors, ramps, Thompson sampling, contextual bandits."""
