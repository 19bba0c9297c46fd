"""Domain errors and their HTTP mapping: every refusal is JSON ``{"detail": ...}`` naming the field or rule."""

from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.db.faults import install_database_fault_handlers


class DomainError(Exception):
    """Base of errors raised by services; ``status_code`` is the HTTP status endpoints answer with."""

    status_code = 400
    #: Response headers to send with the refusal (e.g. ``Retry-After`` on a 503).
    headers: dict[str, str] | None = None

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with what the handler reads (an event ingestion process raises them to the serving process):
        the subclasses' own ``__init__`` signatures differ."""
        return _rebuilt_domain_error, (type(self), self.detail, self.headers)


def _rebuilt_domain_error(cls: type[DomainError], detail: Any, headers: dict[str, str] | None) -> DomainError:
    error = cls.__new__(cls)
    DomainError.__init__(error, detail)
    error.headers = headers
    return error


class NotFound(DomainError):
    """An unknown experiment, metric, model or key (404)."""

    status_code = 404


class Forbidden(DomainError):
    """A rule that needs a higher role than the caller's key has (403), e.g. admin to change who a running
    experiment reaches."""

    status_code = 403


class Conflict(DomainError):
    """An invalid state transition, a frozen field, a duplicate key or a guardrail refusal (409)."""

    status_code = 409


class Unavailable(DomainError):
    """The service cannot take this now but will soon (503 with ``Retry-After``): e.g. the exposure queue is full
    while the database catches up. Nothing of the request was kept; the client retries."""

    status_code = 503

    def __init__(self, detail: Any, retry_after_seconds: int = 1) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_seconds)}


class InvalidInput(DomainError):
    """Input that is well-formed but breaks a rule across fields or against stored data (422).

    ``field`` is a location like ``("body", "metrics", "primary")`` so the detail has the same shape
    as FastAPI's own validation errors.
    """

    status_code = 422

    def __init__(self, field: tuple[str | int, ...], message: str) -> None:
        super().__init__([{"loc": list(field), "msg": message, "type": "value_error"}])


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to their status codes."""

    async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)

    async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(status_code=422, content={"detail": safe_validation_errors(exc.errors())})

    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    install_database_fault_handlers(app)  # database unavailable: 503 + Retry-After (api/db/faults.py)


def _json_safe(value: Any) -> bool:
    try:
        # why encode: a lone surrogate ("\ud800" in the JSON text) dumps, escaped, but the response writes UTF-8
        json.dumps(jsonable_encoder(value), allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (which a JSON body may hold) becomes ``?``."""
    return text.encode("utf-8", "replace").decode()


class ValidationErrorJson(TypedDict):
    """One entry of a 422's ``detail``: where, what, which rule, and the input when it is small and JSON-safe."""

    loc: list[str | int]
    msg: str
    type: str
    input: NotRequired[Any]


def safe_validation_errors(errors: Any) -> list[ValidationErrorJson]:
    """Validation errors as JSON that always serialises: location, message and type of each error, and the
    offending input only when it is small and JSON-safe (an ``inf`` or a huge blob would otherwise turn a
    422 into a 500)."""
    out = []
    for error in errors:
        item: ValidationErrorJson = {
            "loc": [_utf8(part) if isinstance(part, str) else part for part in error.get("loc", ())],
            "msg": _utf8(str(error.get("msg", ""))), "type": str(error.get("type", "value_error"))}
        value = error.get("input")
        if value is not None and _json_safe(value) and len(json.dumps(jsonable_encoder(value))) <= 200:
            item["input"] = jsonable_encoder(value)
        out.append(item)
    return out
