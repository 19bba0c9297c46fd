"""The SDK's ``predict`` helper (sync and async) against a scripted ``/predict`` (httpx.MockTransport): the request
it sends, the answer it parses, and that an error status raises."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from titrate_sdk import AsyncClient, Client, Prediction

ANSWER = {"variant": "v2", "model": "minilm-remote", "outputs": [[0.6, 0.8]], "latency_ms": 3.25,
          "request_id": "abc"}


class Service:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.seen: list[tuple[str, str | None, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.path, request.headers.get("authorization"), json.loads(request.content)))
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "model 'minilm-remote' failed: ..."})
        return httpx.Response(200, json=ANSWER)


def test_predict_posts_the_unit_and_inputs_and_parses_the_answer() -> None:
    service = Service()
    with httpx.Client(transport=httpx.MockTransport(service)) as http:
        client = Client("http://titrate.test/", "k-1", start=False, http_client=http)
        got = client.predict("ranker v2", "u-1", ["hello"], {"country": "US"})
    assert got == Prediction(variant="v2", model="minilm-remote", outputs=[[0.6, 0.8]], latency_ms=3.25,
                             request_id="abc")
    assert service.seen == [("/v1/experiments/ranker v2/predict", "Bearer k-1",  # url.path is decoded
                             {"unit_id": "u-1", "attributes": {"country": "US"}, "inputs": ["hello"]})]


def test_predict_raises_on_an_error_status_sync_and_async() -> None:
    service = Service(status=503)
    with httpx.Client(transport=httpx.MockTransport(service)) as http:
        client = Client("http://titrate.test", "k", start=False, http_client=http)
        with pytest.raises(httpx.HTTPStatusError) as caught:
            client.predict("ranker-v2", "u-1", ["x"])
    assert caught.value.response.status_code == 503

    async def main() -> Prediction:
        ok = Service()
        async with httpx.AsyncClient(transport=httpx.MockTransport(ok)) as http:
            client = AsyncClient("http://titrate.test", "k", start=False, async_http_client=http)
            answer = await client.predict("ranker-v2", "u-2", ["y"])
            assert ok.seen[0][0] == "/v1/experiments/ranker-v2/predict"
            return answer

    assert asyncio.run(main()).variant == "v2"
