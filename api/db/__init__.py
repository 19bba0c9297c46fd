"""Database layer: ORM tables (``tables``), engine and sessions (``engine``)."""
