"""Model serving: the model registry, predictions through experiments, shadow runs, serving guardrail events
and prediction monitoring (``models/`` runs the models; this package wires them into the service)."""
