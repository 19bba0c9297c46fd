"""``titrate export``: titrate's own exposures and events as files a warehouse can load (Parquet)."""

from api.export.parquet import EVENT_COLUMNS, EXPOSURE_COLUMNS, FORMATS, ExportError, ExportResult, export_parquet

__all__ = ["EVENT_COLUMNS", "EXPOSURE_COLUMNS", "FORMATS", "ExportError", "ExportResult", "export_parquet"]
