"""Assignment: units to variants from the in-memory config snapshot, and the buffered exposure writer."""
