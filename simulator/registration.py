"""Create what a scenario needs on the service when it is missing: metrics, model variants, the experiment."""

from __future__ import annotations

import httpx

from simulator.scenario import Registration


def ensure_registered(http: httpx.Client, registration: Registration) -> None:
    """Register the metrics, model specs and experiment that do not exist yet, then start the experiment if it
    is a draft. Existing ones are left as they are (a re-run continues the same experiment).

    Args:
        http: a client on the service root carrying an API key allowed to create them (analyst; admin to start).

    Raises:
        httpx.HTTPStatusError: the service refused one of them (its ``detail`` names the field or rule).
    """
    for metric in registration.metrics:
        if http.get(f"/v1/metrics/{metric['key']}").status_code == 404:
            http.post("/v1/metrics", json=metric).raise_for_status()
    for model in registration.models:
        if http.get(f"/v1/models/{model['key']}").status_code == 404:
            http.post("/v1/models", json=model).raise_for_status()
    key = registration.experiment["key"]
    current = http.get(f"/v1/experiments/{key}")
    if current.status_code == 404:
        http.post("/v1/experiments", json=registration.experiment).raise_for_status()
        current = http.get(f"/v1/experiments/{key}")
    current.raise_for_status()
    if current.json()["status"] == "draft":
        http.post(f"/v1/experiments/{key}/start").raise_for_status()
