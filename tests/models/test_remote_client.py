"""The inference-request client of remote variants (``RemoteEndpoints.post``, aiohttp) over real loopback sockets,
against a scripted raw HTTP/1.1 server: answers parsed, the failures without an answer mapped as httpx named them
(connection refused, a dropped connection, a reply that is not HTTP) and retried, a 503 retried, the deadline,
no redirect followed, no cookie kept, ``${ENV}`` headers sent, keep-alive connections reused."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from models.errors import ModelServingError
from models.remote import Endpoint, RemoteEndpoints, RemoteModelSpec, RemoteSettings
from tests.inference_server.fake import fake_embedding

Step = Callable[[asyncio.StreamWriter, dict[str, str], bytes], Awaitable[None]]


def _reply(status: int, body: bytes, *extra: str, reason: str = "OK") -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answer(texts: list[str]) -> bytes:
    rows = [fake_embedding(t) for t in texts]
    return json.dumps({"outputs": [{"name": "embedding", "datatype": "FP32", "shape": [len(rows), len(rows[0])],
                                    "data": [v for row in rows for v in row]}]}).encode()


async def ok(writer: asyncio.StreamWriter, _headers: dict[str, str], body: bytes) -> None:
    writer.write(_reply(200, _answer(json.loads(body)["inputs"][0]["data"]), "set-cookie: session=1"))


def status(code: int, *extra: str) -> Step:
    async def _step(writer: asyncio.StreamWriter, _headers: dict[str, str], _body: bytes) -> None:
        writer.write(_reply(code, json.dumps({"error": f"scripted {code}"}).encode(), *extra, reason="Scripted"))
    return _step


async def drop(writer: asyncio.StreamWriter, _headers: dict[str, str], _body: bytes) -> None:
    writer.close()


async def garbage(writer: asyncio.StreamWriter, _headers: dict[str, str], _body: bytes) -> None:
    writer.write(b"this is not HTTP\r\n\r\n")
    writer.close()


def slow(seconds: float) -> Step:
    async def _step(writer: asyncio.StreamWriter, headers: dict[str, str], body: bytes) -> None:
        await asyncio.sleep(seconds)
        await ok(writer, headers, body)
    return _step


class Scripted:
    """A raw HTTP/1.1 server on loopback (keep-alive): each request takes the next step of ``script`` (``ok`` when
    it is empty) and is recorded with its headers; ``connections`` counts accepted connections."""

    def __init__(self) -> None:
        self.script: list[Step] = []
        self.requests: list[dict[str, str]] = []
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while not writer.is_closing():
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(headers)
                step = self.script.pop(0) if self.script else ok
                await step(writer, headers, body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _variant(url: str, timeout_ms: int = 1000, retries: int = 1, **endpoint: Any) -> tuple[Any, RemoteEndpoints]:
    endpoints = RemoteEndpoints(RemoteSettings(retries=retries, breaker_failures=10))
    spec = RemoteModelSpec(key="remote-m", task="embedding", max_batch=8, endpoint=Endpoint(
        url=url, protocol="v2", model="m", timeout_ms=timeout_ms, output_name="embedding", **endpoint))
    return endpoints.variant(spec), endpoints


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run(test: Callable[[Scripted], Awaitable[None]]) -> None:
    async with Scripted() as server:
        await test(server)


def test_answers_are_parsed_on_one_kept_alive_connection_with_env_headers_and_no_cookies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TITRATE_TEST_TOKEN", "s3cret")

    async def test(server: Scripted) -> None:
        variant, endpoints = _variant(server.url, headers=(("Authorization", "Bearer ${TITRATE_TEST_TOKEN}"),))
        try:
            for i in range(3):
                texts = [f"a {i}", f"b {i}"]
                assert await variant.apredict_batch(texts) == [fake_embedding(t) for t in texts]
        finally:
            await endpoints.aclose()
        assert server.connections == 1
        assert [r["authorization"] for r in server.requests] == ["Bearer s3cret"] * 3
        assert all(r["content-type"] == "application/json" for r in server.requests)
        assert all("cookie" not in r for r in server.requests)  # the server's set-cookie is not kept

    asyncio.run(_run(test))


@pytest.mark.parametrize(("step", "kind"), [(drop, "RemoteProtocolError"), (garbage, "RemoteProtocolError"),
                                            (status(503), None)])
def test_a_failure_without_a_model_answer_is_retried(step: Step, kind: str | None) -> None:
    async def test(server: Scripted) -> None:
        variant, endpoints = _variant(server.url)
        try:
            server.script = [step]
            assert await variant.apredict_batch(["x"]) == [fake_embedding("x")]  # the retry succeeded
            assert variant.endpoint_state.attempts == 2
            server.script = [step, step]
            with pytest.raises(ModelServingError) as caught:
                await variant.apredict_batch(["x"])
            assert variant.endpoint_state.attempts == 4
        finally:
            await endpoints.aclose()
        where = f"v2 {server.url} model 'm'"
        if kind is None:
            assert caught.value.message == f"{where} answered 503: scripted 503"
        else:
            assert caught.value.message.startswith(f"{where} unreachable: {kind}: "), caught.value.message

    asyncio.run(_run(test))


def test_a_refused_connection_is_a_connect_error_retried_once() -> None:
    async def test() -> None:
        url = f"http://127.0.0.1:{_free_port()}"
        variant, endpoints = _variant(url)
        try:
            with pytest.raises(ModelServingError) as caught:
                await variant.apredict_batch(["x"])
        finally:
            await endpoints.aclose()
        assert caught.value.message.startswith(f"v2 {url} model 'm' unreachable: ConnectError: ")
        assert variant.endpoint_state.attempts == 2

    asyncio.run(test())


def test_the_deadline_bounds_the_exchange_and_a_redirect_is_an_answer() -> None:
    async def test(server: Scripted) -> None:
        variant, endpoints = _variant(server.url, timeout_ms=150)
        try:
            server.script = [slow(1.0)]
            with pytest.raises(ModelServingError) as caught:
                await variant.apredict_batch(["x"])
            assert caught.value.message == f"v2 {server.url} model 'm' timed out after 150 ms"
            assert variant.endpoint_state.attempts == 1  # a timeout is not retried
            server.script = [status(307, f"location: {server.url}/elsewhere")]
            with pytest.raises(ModelServingError, match="answered 307: scripted 307"):
                await variant.apredict_batch(["x"])
            assert len(server.requests) == 2  # not followed
        finally:
            await endpoints.aclose()

    asyncio.run(_run(test))
