"""Errors raised by the model-serving package.

Both carry enough structure for the API layer to turn them into ``{"detail": ...}`` responses
naming the field or the rule broken, without parsing messages.
"""

from __future__ import annotations


class ModelSpecError(ValueError):
    """A model variant spec, or the directory it points at, is unusable.

    Attributes:
        field: the ``ModelSpec`` field at fault (``"path"``, ``"task"``, ``"dtype"``, ``"device"``, ...).
        message: human-readable reason, without the field name.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[ModelSpecError], tuple[str, str]]:
        # Keep pickling (e.g. across process pools) working with the two-argument constructor.
        return (type(self), (self.field, self.message))


class ModelServingError(RuntimeError):
    """A prediction could not be served (the forward pass failed, or the batcher is closed).

    Attributes:
        key: the model variant key the request was sent to.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"model {key!r}: {message}")
        self.key = key
        self.message = message

    def __reduce__(self) -> tuple[type[ModelServingError], tuple[str, str]]:
        return (type(self), (self.key, self.message))
