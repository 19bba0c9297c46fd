"""Remote model variants (models/remote.py) against in-process fake servers (``httpx.MockTransport``): the spec,
``${ENV}`` headers, both protocols' codecs, retries and their budget, the circuit breaker, batching with several
requests in flight, and the registration check's 422/424 answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from models.batching import DynamicBatcher
from models.errors import ModelServingError, ModelSpecError
from models.remote import (
    CircuitBreaker,
    CircuitOpen,
    Endpoint,
    EndpointCheckError,
    RemoteEndpoints,
    RemoteModelSpec,
    RemoteSettings,
    RetryBudget,
    check_endpoint,
    parse_response,
    request_body,
)
from tests.inference_server.fake import fake_embedding, fake_label

URL = "http://inference.test:8080"


def _spec(protocol: str = "v2", task: str = "embedding", **endpoint: Any) -> RemoteModelSpec:
    fields: dict[str, Any] = {"url": URL, "protocol": protocol, "model": "m", "timeout_ms": 500,
                              "output_name": "embedding" if protocol == "v2" and task == "embedding" else None}
    fields.update(endpoint)
    return RemoteModelSpec(key="remote-m", task=task, endpoint=Endpoint(**fields), max_batch=4)  # type: ignore[arg-type]


def _v2_answer(texts: list[str], task: str = "embedding", name: str = "embedding") -> dict[str, Any]:
    if task == "embedding":
        rows = [fake_embedding(t) for t in texts]
        return {"outputs": [{"name": name, "datatype": "FP32", "shape": [len(texts), len(rows[0])],
                             "data": [v for row in rows for v in row]}]}
    return {"outputs": [{"name": name, "datatype": "BYTES", "shape": [len(texts)],
                         "data": [json.dumps(fake_label(t)) for t in texts]}]}


def _texts_of(request: httpx.Request) -> list[str]:
    body = json.loads(request.content)
    return body["input"] if "input" in body else body["inputs"][0]["data"]


class Server:
    """A scripted async handler: ``script`` gives per-request responses (status or callable); records requests."""

    def __init__(self, task: str = "embedding", name: str = "embedding") -> None:
        self.requests: list[httpx.Request] = []
        self.script: list[int | Callable[[httpx.Request], httpx.Response]] = []
        self.task, self.name = task, name
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.script:
                step = self.script.pop(0)
                if callable(step):
                    return step(request)
                if step != 200:
                    return httpx.Response(step, json={"error": f"scripted {step}"})
            texts = _texts_of(request)
            if request.url.path == "/v1/embeddings":
                data = [{"index": i, "embedding": fake_embedding(t)} for i, t in enumerate(texts)]
                return httpx.Response(200, json={"data": data[::-1]})
            return httpx.Response(200, json=_v2_answer(texts, self.task, self.name))
        finally:
            self.in_flight -= 1


def _endpoints(server: Server, clock: Callable[[], float] | None = None, **settings: Any) -> RemoteEndpoints:
    options: dict[str, Any] = {"retries": 1, "breaker_failures": 3, "breaker_reset_seconds": 10.0, **settings}
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return RemoteEndpoints(RemoteSettings(**options), transport=httpx.MockTransport(server), **kwargs)


# --- spec --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "field"), [
    ({"url": "host:8080"}, "endpoint.url"),
    ({"protocol": "grpc"}, "endpoint.protocol"),
    ({"model": ""}, "endpoint.model"),
    ({"model": "a/b"}, "endpoint.model"),
    ({"timeout_ms": 0}, "endpoint.timeout_ms"),
    ({"timeout_ms": True}, "endpoint.timeout_ms"),
    ({"headers": {"Bad Header": "x"}}, "endpoint.headers"),
    ({"input_name": ""}, "endpoint.input_name"),
])
def test_endpoint_validation_names_the_field(fields: dict[str, Any], field: str) -> None:
    base = {"url": URL, "protocol": "v2", "model": "m"}
    with pytest.raises(ModelSpecError) as caught:
        Endpoint(**{**base, **fields})
    assert caught.value.field == field


def test_openai_serves_embeddings_only_and_the_spec_round_trips() -> None:
    with pytest.raises(ModelSpecError) as caught:
        _spec("openai", "text-classification")
    assert caught.value.field == "endpoint.protocol"
    spec = _spec(headers={"Authorization": "Bearer ${TOKEN}"}, url=URL + "/")
    assert spec.endpoint.url == URL
    data = spec.to_dict()
    assert data["endpoint"]["headers"] == {"Authorization": "Bearer ${TOKEN}"}
    assert Endpoint.from_dict(data["endpoint"]) == spec.endpoint
    with pytest.raises(ModelSpecError) as unknown:
        Endpoint.from_dict({**data["endpoint"], "verb": "PUT"})
    assert unknown.value.field == "endpoint.verb"


def test_headers_read_the_environment_at_use_and_name_a_missing_variable() -> None:
    endpoint = Endpoint(url=URL, protocol="v2", model="m", headers={"Authorization": "Bearer ${TOKEN}", "X-A": "b"})
    assert endpoint.expanded_headers({"TOKEN": "one"}) == {"Authorization": "Bearer one", "X-A": "b"}
    assert endpoint.expanded_headers({"TOKEN": "two"})["Authorization"] == "Bearer two"
    with pytest.raises(ModelSpecError) as caught:
        endpoint.expanded_headers({})
    assert caught.value.field == "endpoint.headers.Authorization"
    assert "'TOKEN'" in caught.value.message


# --- codecs --------------------------------------------------------------------------------------------------------


def test_request_bodies_follow_each_protocol() -> None:
    assert request_body(_spec("openai").endpoint, ["a", "b"]) == {"model": "m", "input": ["a", "b"]}
    assert request_body(_spec(input_name="prompt").endpoint, ["a"]) == {
        "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
        "outputs": [{"name": "embedding"}]}


def test_openai_outputs_follow_data_index_order() -> None:
    body = {"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]}
    assert parse_response(_spec("openai"), body, 2) == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="1 embeddings for 2 inputs"):
        parse_response(_spec("openai"), {"data": body["data"][:1]}, 2)
    with pytest.raises(ValueError, match="distinct index"):
        parse_response(_spec("openai"), {"data": [body["data"][0], body["data"][0]]}, 2)


def test_v2_embeddings_flat_or_nested_and_classifications_as_json() -> None:
    flat = {"outputs": [{"name": "other", "datatype": "FP32", "shape": [2, 1], "data": [9, 9]},
                        {"name": "embedding", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    assert parse_response(_spec(), flat, 2) == [[1.0, 2.0], [3.0, 4.0]]
    nested = {"outputs": [{"name": "embedding", "datatype": "FP64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
    assert parse_response(_spec(), nested, 2) == [[1.0, 2.0], [3.0, 4.0]]
    labels = _v2_answer(["a cat", "a much longer text"], "text-classification", "label")
    spec = _spec(task="text-classification", output_name="label")
    assert parse_response(spec, labels, 2) == [fake_label("a cat"), fake_label("a much longer text")]


@pytest.mark.parametrize(("body", "message"), [
    ({"outputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}, "no output tensor named"),
    ({"outputs": [{"name": "embedding", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, "not a float tensor"),
    ({"outputs": [{"name": "embedding", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}, "expected [1"),
    ({"outputs": [{"name": "embedding", "datatype": "FP32", "shape": [1, 2], "data": [1, "x"]}]}, "not a finite"),
    ({"detail": "nope"}, "no 'outputs' tensors"),
])
def test_v2_answers_off_protocol_are_named(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_response(_spec(), body, 1)


@pytest.mark.parametrize(("data", "message"), [
    ([1.0, float("nan")], "holds nan"),
    ([float("inf"), 1.0], "holds inf"),
    ([float("inf"), float("-inf")], "holds inf"),  # the sum is nan (fsum raises): the slow path names the value
    ([True, 1.0], "holds True"),  # bool is an int to isinstance, never a number here
    ([1.0, None], "holds None"),
    ([1.0, [2.0]], r"holds \[2.0\]"),
])
def test_embedding_values_must_be_finite_numbers(data: list[Any], message: str) -> None:
    body = {"outputs": [{"name": "embedding", "datatype": "FP32", "shape": [1, 2], "data": data}]}
    with pytest.raises(ValueError, match=message):
        parse_response(_spec(), body, 1)


def test_embedding_values_pass_as_floats_even_when_their_sum_overflows() -> None:
    """Finite values whose exact sum overflows (fsum raises) take the per-element path and pass."""
    body = {"outputs": [{"name": "embedding", "datatype": "FP64", "shape": [1, 3], "data": [1e308, 1e308, 7]}]}
    out = parse_response(_spec(), body, 1)
    assert out == [[1e308, 1e308, 7.0]]
    assert all(type(v) is float for v in out[0])


# --- resilience ------------------------------------------------------------------------------------------------------


def test_circuit_breaker_opens_fails_fast_then_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=5.0, clock=lambda: now[0])
    assert breaker.allow()
    breaker.failure("a")
    breaker.success()  # a success resets the consecutive count
    breaker.failure("b")
    assert breaker.state == "closed"
    breaker.failure("c")
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.retry_in() == 5.0
    now[0] = 5.0
    assert breaker.state == "half-open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.failure("d")  # a failed trial opens it again at once
    assert breaker.state == "open"
    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_retry_budget_allows_a_fraction_of_requests() -> None:
    budget = RetryBudget(ratio=0.5, min_tokens=1.0, max_tokens=2.0)
    assert budget.withdraw()
    assert not budget.withdraw()
    budget.deposit()
    assert not budget.withdraw()
    budget.deposit()
    assert budget.withdraw()
    for _ in range(10):
        budget.deposit()
    assert budget.withdraw()
    assert budget.withdraw()
    assert not budget.withdraw()  # capped at max_tokens


def test_a_variant_serves_both_protocols_with_headers_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    server = Server()

    async def scenario() -> None:
        endpoints = _endpoints(server)
        openai = endpoints.variant(_spec("openai", headers={"Authorization": "Bearer ${TITRATE_TEST_TOKEN}"}))
        v2 = endpoints.variant(_spec())
        texts = ["one", "two", "three", "four", "five"]
        monkeypatch.setenv("TITRATE_TEST_TOKEN", "first")
        assert await openai.apredict_batch(texts) == [fake_embedding(t) for t in texts]
        monkeypatch.setenv("TITRATE_TEST_TOKEN", "rotated")
        assert await openai.apredict_batch(["x"]) == [fake_embedding("x")]
        assert await v2.apredict_batch(texts) == [fake_embedding(t) for t in texts]
        monkeypatch.delenv("TITRATE_TEST_TOKEN")
        with pytest.raises(ModelServingError, match="TITRATE_TEST_TOKEN"):
            await openai.apredict_batch(["x"])
        await endpoints.aclose()

    asyncio.run(scenario())
    auth = [r.headers.get("authorization") for r in server.requests if r.url.path == "/v1/embeddings"]
    assert auth == ["Bearer first", "Bearer first", "Bearer rotated"]  # 5 texts, max_batch 4: two requests
    assert [len(_texts_of(r)) for r in server.requests] == [4, 1, 1, 4, 1]
    assert server.requests[-1].url.path == "/v2/models/m/infer"


def test_retries_only_retryable_failures_within_the_budget() -> None:
    server = Server()

    async def scenario() -> None:
        variant = _endpoints(server, retry_budget=0.0).variant(_spec())
        server.script = [503]
        assert await variant.apredict_batch(["a"]) == [fake_embedding("a")]  # retried once (min tokens)
        server.script = [400]
        with pytest.raises(ModelServingError, match=r"answered 400: scripted 400"):
            await variant.apredict_batch(["a"])  # a client error is not retried
        server.script = [502, 502]
        with pytest.raises(ModelServingError, match="answered 502"):
            await variant.apredict_batch(["a"])  # one retry, then the error

    asyncio.run(scenario())
    assert len(server.requests) == 2 + 1 + 2
    server2 = Server()

    async def spent() -> None:
        variant = _endpoints(server2, retry_budget=0.0).variant(_spec())
        for _ in range(3):  # the budget's 3 starting tokens
            server2.script = [503]
            await variant.apredict_batch(["a"])
        server2.script = [503]
        with pytest.raises(ModelServingError, match="answered 503"):
            await variant.apredict_batch(["a"])  # budget spent: no retry

    asyncio.run(spent())
    assert len(server2.requests) == 3 * 2 + 1


def test_a_timeout_is_an_error_naming_the_deadline() -> None:
    server = Server()
    server.delay = 0.5

    async def scenario() -> None:
        variant = _endpoints(server).variant(_spec(timeout_ms=50))
        with pytest.raises(ModelServingError, match="timed out after 50 ms"):
            await variant.apredict_batch(["a"])

    asyncio.run(scenario())
    assert len(server.requests) == 1  # a timeout spends the deadline: no retry


def test_the_breaker_stops_calling_a_failing_endpoint_and_recovers_after_a_trial() -> None:
    server = Server()
    now = [0.0]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def scenario() -> None:
        endpoints = _endpoints(server, clock=lambda: now[0], retries=0)
        variant = endpoints.variant(_spec())
        server.script = [refuse] * 3
        for _ in range(3):
            with pytest.raises(ModelServingError, match="unreachable: ConnectError"):
                await variant.apredict_batch(["a"])
        for _ in range(5):
            with pytest.raises(CircuitOpen, match="circuit breaker open .* after 3 consecutive failures"):
                await variant.apredict_batch(["a"])
        assert len(server.requests) == 3  # fails fast: the open breaker sends nothing
        # Another variant on the same endpoint shares the breaker.
        other = endpoints.variant(RemoteModelSpec("other-key", "embedding", variant.spec.endpoint))
        with pytest.raises(CircuitOpen):
            await other.apredict_batch(["a"])
        now[0] = 10.0
        assert variant.describe()["breaker"] == "half-open"
        assert await variant.apredict_batch(["a"]) == [fake_embedding("a")]
        assert variant.describe()["breaker"] == "closed"

    asyncio.run(scenario())
    assert len(server.requests) == 4


def test_the_batcher_batches_remote_requests_with_several_in_flight() -> None:
    server = Server()
    server.delay = 0.05

    async def scenario() -> list[list[Any]]:
        variant = _endpoints(server, max_in_flight=2).variant(
            RemoteModelSpec("remote-m", "embedding", _spec().endpoint, max_batch=8))
        async with DynamicBatcher(variant, max_wait_ms=2.0) as batcher:
            assert batcher.max_in_flight == 2
            results = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(40)))
            assert batcher.stats.requests == 40
            assert batcher.stats.batches == len(server.requests)
        return results

    results = asyncio.run(scenario())
    assert results == [[fake_embedding(f"t{i}")] for i in range(40)]
    assert server.max_in_flight == 2
    assert len(server.requests) <= 40 // 8 + 2  # batched: ~5 requests of 8, not 40
    assert max(len(_texts_of(r)) for r in server.requests) == 8


def test_variants_naming_one_endpoint_share_its_concurrency_bound() -> None:
    server = Server()
    server.delay = 0.02

    async def scenario() -> None:
        endpoints = _endpoints(server, max_in_flight=2)
        spec = RemoteModelSpec("remote-m", "embedding", _spec().endpoint, max_batch=1)
        twin = RemoteModelSpec("remote-twin", "embedding", _spec().endpoint, max_batch=1)
        async with DynamicBatcher(endpoints.variant(spec)) as one, DynamicBatcher(endpoints.variant(twin)) as two:
            await asyncio.gather(*(b.submit([f"t{i}"]) for i in range(10) for b in (one, two)))

    asyncio.run(scenario())
    assert len(server.requests) == 20
    assert server.max_in_flight == 2  # not 2 per variant


def test_a_failed_remote_batch_fails_its_callers_with_the_servers_message() -> None:
    server = Server()
    server.script = [500]

    async def scenario() -> None:
        variant = _endpoints(server).variant(_spec())
        async with DynamicBatcher(variant) as batcher:
            with pytest.raises(ModelServingError) as caught:
                await batcher.submit(["a"])
            assert caught.value.message == f"v2 {URL} model 'm' answered 500: scripted 500"
            assert await batcher.submit(["b"]) == [fake_embedding("b")]

    asyncio.run(scenario())


# --- the registration check ---------------------------------------------------------------------------------------


def _checker(routes: dict[str, Callable[[httpx.Request], httpx.Response]]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path}"
        if key not in routes:
            return httpx.Response(404, json={"error": f"Model m not found ({key})"})
        return routes[key](request)

    return httpx.Client(transport=httpx.MockTransport(handler))


def _metadata(inputs: list[str], outputs: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _r: httpx.Response(200, json={"name": "m", "inputs": [{"name": n} for n in inputs],
                                                "outputs": [{"name": n} for n in outputs]})


V2_OK = {"GET /v2/models/m/ready": lambda _r: httpx.Response(200),
         "GET /v2/models/m": _metadata(["text"], ["embedding"]),
         "POST /v2/models/m/infer": lambda r: httpx.Response(200, json=_v2_answer(_texts_of(r)))}


def test_check_resolves_the_only_output_and_accepts_a_good_server() -> None:
    spec = _spec(output_name=None)
    checked = check_endpoint(spec, client=_checker(V2_OK))
    assert checked.endpoint.output_name == "embedding"
    assert check_endpoint(_spec("openai"), client=_checker(
        {"POST /v1/embeddings": lambda r: httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0]}]})}
    )) == _spec("openai")


def _refused_check(spec: RemoteModelSpec, routes: dict[str, Any]) -> EndpointCheckError:
    with pytest.raises(EndpointCheckError) as caught:
        check_endpoint(spec, client=_checker(routes))
    return caught.value


def test_check_refusals_name_the_field_and_quote_the_server() -> None:
    unknown = _refused_check(_spec(model="nope"), V2_OK)
    assert (unknown.status, unknown.field) == (422, "endpoint.model")
    assert "Model m not found" in unknown.message
    wrong_input = _refused_check(_spec(input_name="prompt"), V2_OK)
    assert (wrong_input.status, wrong_input.field) == (422, "endpoint.input_name")
    assert "['text']" in wrong_input.message
    wrong_output = _refused_check(_spec(output_name="logits"), V2_OK)
    assert (wrong_output.status, wrong_output.field) == (422, "endpoint.output_name")
    two = _refused_check(_spec(output_name=None), {**V2_OK, "GET /v2/models/m": _metadata(["text"], ["a", "b"])})
    assert (two.status, two.field) == (422, "endpoint.output_name")
    classifier = _refused_check(_spec(task="text-classification", output_name="embedding"), V2_OK)
    assert (classifier.status, classifier.field) == (422, "endpoint.output_name")
    assert "BYTES JSON" in classifier.message
    not_ready = _refused_check(_spec(), {**V2_OK, "GET /v2/models/m/ready": lambda _r: httpx.Response(503)})
    assert (not_ready.status, not_ready.field) == (424, "endpoint.model")
    broken = _refused_check(_spec(), {**V2_OK, "POST /v2/models/m/infer": lambda _r: httpx.Response(
        500, json={"error": "CUDA out of memory"})})
    assert (broken.status, broken.field) == (424, "endpoint.url")
    assert "CUDA out of memory" in broken.message
    denied = _refused_check(_spec("openai"), {"POST /v1/embeddings": lambda _r: httpx.Response(
        401, json={"error": {"message": "bad token"}})})
    assert (denied.status, denied.field) == (422, "endpoint.headers")
    assert "bad token" in denied.message


def test_check_of_an_unreachable_server_or_a_missing_secret() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    unreachable = _refused_check(_spec(), {"GET /v2/models/m/ready": refuse})
    assert (unreachable.status, unreachable.field) == (424, "endpoint.url")
    assert "unreachable" in unreachable.message
    missing = _refused_check(_spec(headers={"Authorization": "Bearer ${TITRATE_UNSET_SECRET_X}"}), V2_OK)
    assert (missing.status, missing.field) == (422, "endpoint.headers.Authorization")
