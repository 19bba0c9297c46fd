"""Event ingestion: metric events validated and stored idempotently (in bulk) for the scorecards."""
