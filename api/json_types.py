"""Names for JSON whose shape the user decides.

``JsonObject`` marks a JSON object that is free-form by contract: unit attributes, variant payloads, a dead-lettered
request body, an audit row's before/after snapshot, the JSON columns that store those. Structured data the service
itself shapes gets a real type instead (a ``TypedDict`` for a wire shape, a pydantic model or a frozen dataclass):
this alias says "any keys, any JSON values, on purpose", never "not typed yet".

It lives in a leaf module of its own (no imports from ``api``) rather than beside ``JSONType`` in ``api.db.types``,
because the pydantic request schemas use it too and should not import the database layer to name a dict.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: A free-form JSON object (keys are strings, values any JSON the user sent).
JsonObject: TypeAlias = dict[str, Any]
