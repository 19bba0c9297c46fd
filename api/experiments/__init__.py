"""The experiment registry: definitions, plans, the lifecycle and its audit trail."""
