"""Incremental scorecards: per-unit scorecard rows materialised in titrate's database and refreshed from new data
(``service``), the periodic refresh job (``scheduler``) and their queries (``repository``)."""
