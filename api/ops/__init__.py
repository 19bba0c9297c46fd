"""Operability: liveness, readiness, Prometheus metrics and request-latency observation."""
