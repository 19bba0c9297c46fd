"""Registration rule: the models an experiment's variants name are registered and share one task.

It lives with the experiment registry (it validates experiment bodies) and reads the model registry through
``api.experiments.repository.model_tasks``, so ``api.experiments`` does not import ``api.serving`` (which builds
on experiments and assignment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.orm import Session

from api.errors import InvalidInput
from api.experiments import repository


class VariantLike(Protocol):
    """What the check reads of a variant (a request body's ``VariantIn`` or an ORM ``Variant``)."""

    key: str
    model: str | None


def check_variant_models(session: Session, variants: Sequence[VariantLike]) -> None:
    """Every variant's ``model`` is registered, and an experiment's models share one task (their outputs are
    compared: scores with scores, embeddings with embeddings); 422 naming ``variants.<i>.model``."""
    tasks = repository.model_tasks(session, [v.model for v in variants if v.model is not None])
    first: tuple[str, str] | None = None
    for i, variant in enumerate(variants):
        if variant.model is None:
            continue
        task = tasks.get(variant.model)
        if task is None:
            raise InvalidInput(("body", "variants", i, "model"),
                               f"unknown model '{variant.model}': register it with POST /v1/models")
        if first is None:
            first = (variant.key, task)
        elif task != first[1]:
            raise InvalidInput(("body", "variants", i, "model"),
                               f"model '{variant.model}' is a {task} model but variant '{first[0]}' serves a "
                               f"{first[1]} model: an experiment's models share one task")
