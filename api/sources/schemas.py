"""Request/response schemas of analysis sources (DESIGN.md "Analysis sources"; field names fixed there)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, Field, StringConstraints, model_validator

from api.schemas_common import Key, RequestModel

#: A column or table name in the user's database: printable, no quotes needed (SQLAlchemy quotes what needs it).
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
TableName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
SourceSql = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class ExposureColumns(RequestModel):
    """The source's names of titrate's exposure fields."""

    unit_id: ColumnName
    experiment: ColumnName = Field(description="holds the experiment's key; other experiments' rows are ignored")
    variant: ColumnName
    timestamp: ColumnName = Field(description="a timestamp (or date) column; on SQLite ISO text")
    attributes: ColumnName | None = Field(None, description="a JSON (or map/struct) column of unit attributes")


class EventColumns(RequestModel):
    """The source's names of titrate's event fields."""

    unit_id: ColumnName
    name: ColumnName
    value: ColumnName = Field(description="a numeric column (NULL counts as 1.0, the event API's default)")
    timestamp: ColumnName = Field(description="a timestamp (or date) column; on SQLite ISO text")
    event_id: ColumnName | None = Field(None, description="when given, rows repeating an id count once")


class _Rows(RequestModel):
    table: TableName | None = Field(None, description="a table or view, optionally schema-qualified (schema.name)")
    sql: SourceSql | None = Field(None, description="instead of table: one read-only SELECT (or WITH … SELECT)")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.table is None) == (self.sql is None):
            raise ValueError("give exactly one of 'table' and 'sql'")
        return self


class ExposureMapping(_Rows):
    """Where the exposures are and which columns hold titrate's fields."""

    columns: ExposureColumns


class EventMapping(_Rows):
    """Where the events are and which columns hold titrate's fields."""

    columns: EventColumns


#: A schema of the source that titrate may write into: a plain identifier (letters, digits, ``_``), so it is never
#: SQL and needs no quoting on any engine; 63 characters at most (PostgreSQL's limit).
SchemaName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class Materialise(RequestModel):
    """Where the per-(experiment, unit) rows of the incremental scorecard are kept in the source (opt-in)."""

    schema_: SchemaName = Field(alias="schema", description="a schema of the source titrate may create tables in and "
                                                            "write (created if absent; DuckDB and PostgreSQL sources)")


class SourceCreate(RequestModel):
    """Register an analysis source: a database URL and the mapping of its exposure and event rows."""

    key: Key
    url: str = Field(min_length=1, max_length=2000,
                     description="any SQLAlchemy URL; ${ENV_NAME} is read from the service's environment at use")
    exposures: ExposureMapping
    events: EventMapping
    materialise: Materialise | None = Field(
        None, description="keep the materialised scorecard rows in this schema of the source (the scorecard's "
                          "aggregation then runs there); without it they are kept in titrate's database")


class SourceOut(BaseModel):
    """A registered analysis source; the URL's password is masked (``${ENV}`` references are shown as given)."""

    key: str
    url: str
    exposures: ExposureMapping
    events: EventMapping
    materialise: Materialise | None = None
    created_at: datetime
