"""Model variants served by an existing inference server (KServe, Triton, MLServer, text-embeddings-inference, vLLM).

A :class:`RemoteModelSpec` names an :class:`Endpoint` instead of a local directory (DESIGN.md, Serving):

- ``protocol="openai"`` (embeddings only): ``POST {url}/v1/embeddings {"model", "input": [texts]}``; the outputs
  are ``data[].embedding`` in ``data[].index`` order.
- ``protocol="v2"`` (Open Inference Protocol): ``POST {url}/v2/models/{model}/infer`` with one BYTES input tensor
  ``input_name`` (default ``"text"``) of shape ``[n]``; the outputs come from the tensor ``output_name``: an
  embedding model answers a float tensor ``[n, d]``, a classifier a BYTES tensor ``[n]`` whose elements are JSON
  ``{"label", "score"}`` (MLServer's HuggingFace runtime convention).

Header values may hold ``${ENV}`` references; they are expanded from the environment at each use and never stored
expanded (a rotated token is picked up without re-registering).

:class:`RemoteVariant` is the servable object: the :class:`models.batching.DynamicBatcher` awaits its
:meth:`RemoteVariant.apredict_batch` on the event loop (no worker thread: the call is network I/O), with up to
``max_in_flight`` batches in flight per variant. Around each inference request sit a deadline (``timeout_ms``,
retries included), a :class:`RetryBudget` for the idempotent retries, and a :class:`CircuitBreaker` per endpoint
that fails calls at once while the endpoint is down. :func:`check_endpoint` is the registration check (blocking).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import aiohttp
import httpx
import orjson

from models.errors import ModelServingError, ModelSpecError
from models.spec import _KEY_RE, TASKS, Task
from models.variants import ClassificationOutput, check_texts

Protocol = Literal["openai", "v2"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")  # an RFC 9110 token
_FLOAT_TYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})
#: The text sent by the registration probe (openai servers have no readiness route; v2's probe checks the outputs).
PROBE_TEXT = "titrate readiness probe"


# --- spec --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how a remote model variant is served.

    Attributes:
        url: the server's base URL (``http://host:port``, no trailing slash, optional path prefix).
        protocol: ``"openai"`` or ``"v2"`` (see the module docstring).
        model: the model's name on that server.
        timeout_ms: the deadline of one inference request, retries included (milliseconds).
        headers: ``(name, value)`` pairs sent with every request; values may reference ``${ENV}`` variables.
        input_name: v2 only: the BYTES input tensor's name.
        output_name: v2 only: the output tensor read; ``None`` until registration resolves it from the server's
            metadata (a model with exactly one output).
    """

    url: str
    protocol: Protocol
    model: str
    timeout_ms: int = 2000
    headers: tuple[tuple[str, str], ...] = ()
    input_name: str = "text"
    output_name: str | None = None

    def __post_init__(self) -> None:
        url = self.url.rstrip("/") if isinstance(self.url, str) else self.url
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
            raise ModelSpecError("endpoint.url", f"must be an http(s) URL like http://host:port, got {self.url!r}")
        object.__setattr__(self, "url", url)
        if self.protocol not in PROTOCOLS:
            raise ModelSpecError("endpoint.protocol", f"must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if not isinstance(self.model, str) or not 0 < len(self.model) <= 256 or "/" in self.model:
            raise ModelSpecError("endpoint.model",
                                 f"must be a model name of 1-256 chars without '/', got {self.model!r}")
        timeout = self.timeout_ms
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 600_000:
            raise ModelSpecError("endpoint.timeout_ms", f"must be an integer in [1, 600000], got {self.timeout_ms!r}")
        headers = tuple((str(k), str(v)) for k, v in (self.headers.items() if isinstance(self.headers, Mapping)
                                                          else self.headers))
        for name, _value in headers:
            if not _HEADER_NAME.match(name):
                raise ModelSpecError("endpoint.headers", f"{name!r} is not a valid header name")
        object.__setattr__(self, "headers", headers)
        for name in ("input_name", "output_name"):
            value = getattr(self, name)
            if value is None and name == "output_name":
                continue
            if not isinstance(value, str) or not 0 < len(value) <= 128:
                raise ModelSpecError(f"endpoint.{name}", f"must be a tensor name of 1-128 chars, got {value!r}")

    def expanded_headers(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers with every ``${NAME}`` replaced by the environment variable ``NAME`` (read now).

        Raises:
            ModelSpecError: on ``endpoint.headers.<header>`` when a referenced variable is not set.
        """
        env = os.environ if environ is None else environ
        out: dict[str, str] = {}
        for name, value in self.headers:
            missing = [ref for ref in _ENV_REF.findall(value) if ref not in env]
            if missing:
                raise ModelSpecError(f"endpoint.headers.{name}",
                                     f"references the environment variable {missing[0]!r}, which is not set")
            out[name] = _ENV_REF.sub(lambda m: env[m.group(1)], value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (headers as an object, ``${ENV}`` references unexpanded)."""
        return {"url": self.url, "protocol": self.protocol, "model": self.model, "timeout_ms": self.timeout_ms,
                "headers": dict(self.headers), "input_name": self.input_name, "output_name": self.output_name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Endpoint:
        """Build from a JSON-like mapping (as :meth:`to_dict` writes it); unknown keys are errors."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelSpecError(f"endpoint.{unknown[0]}", "unknown field")
        for required in ("url", "protocol", "model"):
            if required not in data:
                raise ModelSpecError(f"endpoint.{required}", "field required")
        return cls(**{**data, "headers": tuple(dict(data.get("headers") or {}).items())})

    @property
    def infer_url(self) -> str:
        """The URL inference requests are POSTed to."""
        if self.protocol == "openai":
            return f"{self.url}/v1/embeddings"
        return f"{self.url}/v2/models/{self.model}/infer"

    def describe(self) -> str:
        """``"v2 http://host:port model 'name'"``, for messages."""
        return f"{self.protocol} {self.url} model {self.model!r}"


@dataclass(frozen=True, slots=True)
class RemoteModelSpec:
    """A model variant served by an inference server.

    Attributes:
        key: unique model key, as for :class:`models.spec.ModelSpec`.
        task: ``"text-classification"`` (v2 only) or ``"embedding"``.
        endpoint: where it is served.
        max_batch: most texts in one inference request (the dynamic batcher's cap).
    """

    key: str
    task: Task
    endpoint: Endpoint
    max_batch: int = 64
    remote: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.match(self.key):
            raise ModelSpecError("key", f"must match {_KEY_RE.pattern}, got {self.key!r}")
        if self.task not in TASKS:
            raise ModelSpecError("task", f"must be one of {list(TASKS)}, got {self.task!r}")
        if not isinstance(self.endpoint, Endpoint):
            raise ModelSpecError("endpoint", "must be an Endpoint")
        if self.endpoint.protocol == "openai" and self.task != "embedding":
            raise ModelSpecError("endpoint.protocol",
                                 "'openai' serves embeddings only; use 'v2' for text-classification")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ModelSpecError("max_batch", f"must be a positive integer, got {self.max_batch!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {"key": self.key, "task": self.task, "endpoint": self.endpoint.to_dict(), "max_batch": self.max_batch}


# --- resilience ----------------------------------------------------------------------------------------------------


class CircuitOpen(ModelServingError):
    """The endpoint's circuit breaker is open: the call failed without reaching the server."""


class CircuitBreaker:
    """The classic three-state breaker (closed → open → half-open), one per endpoint.

    - **closed**: calls go through; ``failure_threshold`` consecutive failures open the breaker.
    - **open**: calls fail at once (no request, no timeout to wait for) for ``reset_seconds``.
    - **half-open**: after that, one trial call goes through (others still fail fast); its success closes the
      breaker, its failure opens it for another ``reset_seconds``.

    A small state machine instead of a library: the service needs exactly this, on the event loop, with an
    injectable clock for tests. Not thread-safe (event loop only).
    """

    def __init__(self, failure_threshold: int = 5, reset_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1 or reset_seconds < 0:
            raise ValueError("failure_threshold >= 1 and reset_seconds >= 0 required")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self.last_error = ""

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        """The state now (an open breaker whose reset time passed reads ``half-open``)."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go to the server now (in half-open, claims the one trial)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until the next trial call is allowed (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_seconds - self._clock())

    def success(self) -> None:
        """Record a successful call: closes the breaker."""
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def failure(self, error: str) -> None:
        """Record a failed call: opens the breaker at the threshold, or again after a failed trial."""
        self.last_error = error
        self._failures += 1
        if self._trial_in_flight or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_in_flight = False

    def release(self) -> None:
        """Forget a claimed trial that ended neither way (the caller was cancelled)."""
        self._trial_in_flight = False


class RetryBudget:
    """Retries as a bounded fraction of requests (the retry budget of Finagle and Envoy).

    Each request deposits ``ratio`` tokens (capped at ``max_tokens``); a retry withdraws one. When an endpoint
    fails every request, retries therefore add at most ``ratio`` × the request rate instead of multiplying it,
    so retries cannot turn a struggling server into a dead one. ``min_tokens`` allows a few retries at low rate.
    """

    def __init__(self, ratio: float = 0.2, min_tokens: float = 3.0, max_tokens: float = 100.0) -> None:
        self.ratio = ratio
        self.max_tokens = max_tokens
        self._tokens = min_tokens

    def deposit(self) -> None:
        """Credit one request."""
        self._tokens = min(self.max_tokens, self._tokens + self.ratio)

    def withdraw(self) -> bool:
        """Take one retry; ``False`` when the budget is spent."""
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class RemoteSettings:
    """How remote variants call their servers (``api/settings.py`` ``serving_remote_*``).

    Attributes:
        max_in_flight: inference requests in flight at once per endpoint (url + model), and per remote variant
            (its batcher's slots).
        retries: extra attempts after a failed one (connection refused or reset, 502/503/504), within the deadline.
        retry_budget: retries allowed as a fraction of requests (see :class:`RetryBudget`).
        breaker_failures: consecutive failed calls that open an endpoint's breaker.
        breaker_reset_seconds: how long an open breaker fails calls before it lets a trial through.
        max_connections: the HTTP connection pool's size (all endpoints).
    """

    max_in_flight: int = 8
    retries: int = 1
    retry_budget: float = 0.2
    breaker_failures: int = 5
    breaker_reset_seconds: float = 5.0
    max_connections: int = 100


# --- protocol codecs ------------------------------------------------------------------------------------------------


class ProtocolError(ValueError):
    """The server's answer does not fit the protocol or the task (message names what is wrong)."""


def request_body(endpoint: Endpoint, texts: list[str]) -> dict[str, Any]:
    """The JSON body of an inference request for ``texts``."""
    if endpoint.protocol == "openai":
        return {"model": endpoint.model, "input": texts}
    body: dict[str, Any] = {"inputs": [{"name": endpoint.input_name, "shape": [len(texts)], "datatype": "BYTES",
                                        "data": texts}]}
    if endpoint.output_name is not None:
        body["outputs"] = [{"name": endpoint.output_name}]
    return body


_NUMBER_TYPES = frozenset({float, int})


def _floats(values: Any, where: str) -> list[float]:
    if not isinstance(values, list) or not values:
        raise ProtocolError(f"{where} is not a non-empty list of numbers")
    # Fast path (the common answer: plain floats, all finite), in C: the element types by set, finiteness by the
    # exact sum (an inf or nan anywhere makes it non-finite or raises; so does an overflowing sum, which then takes
    # the slow path below and passes). The per-element loop cost ~45 µs for 384 floats on the response path.
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:  # bool is its own type, so True/False never pass here
        try:
            if math.isfinite(math.fsum(values)):
                return values if len(types) == 1 and float in types else [float(v) for v in values]
        except (OverflowError, ValueError):
            pass
    out: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError(f"{where} holds {value!r}, not a finite number")
        out.append(float(value))
    return out


def _flatten(data: Any) -> list[Any]:
    """v2 tensor data may be flat (row-major) or nested; return it flat."""
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [item for row in data for item in _flatten(row)]
    return data if isinstance(data, list) else [data]


def _parse_openai(body: Any, n: int) -> list[Any]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ProtocolError("the answer has no 'data' list (not an OpenAI embeddings response)")
    if len(data) != n:
        raise ProtocolError(f"the answer holds {len(data)} embeddings for {n} inputs")
    by_index: dict[int, list[float]] = {}
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise ProtocolError(f"data[{position}] is not an object")
        index = item.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n or index in by_index:
            raise ProtocolError(f"data[{position}].index is {index!r}: not a distinct index in [0, {n})")
        by_index[index] = _floats(item.get("embedding"), f"data[{position}].embedding")
    return [by_index[i] for i in range(n)]


def _v2_output(endpoint: Endpoint, body: Any) -> dict[str, Any]:
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise ProtocolError("the answer has no 'outputs' tensors (not an Open Inference Protocol v2 response)")
    if endpoint.output_name is None:
        if len(outputs) != 1:
            raise ProtocolError(f"the model answers {len(outputs)} output tensors "
                                f"{[o.get('name') for o in outputs]}: name the one to read in output_name")
        output: dict[str, Any] = outputs[0]
        return output
    for output in outputs:
        if output.get("name") == endpoint.output_name:
            return output
    raise ProtocolError(f"no output tensor named {endpoint.output_name!r} in the answer "
                        f"(it has {[o.get('name') for o in outputs]})")


def _parse_v2(endpoint: Endpoint, task: str, body: Any, n: int) -> list[Any]:
    output = _v2_output(endpoint, body)
    name, datatype, shape = output.get("name"), output.get("datatype"), output.get("shape")
    data = _flatten(output.get("data"))
    if task == "embedding":
        if datatype not in _FLOAT_TYPES:
            raise ProtocolError(f"output {name!r} is {datatype}, not a float tensor of embeddings")
        if not isinstance(shape, list) or len(shape) != 2 or shape[0] != n or not isinstance(shape[1], int):
            raise ProtocolError(f"output {name!r} has shape {shape}, expected [{n}, dimension]")
        dim = shape[1]
        values = _floats(data, f"output {name!r}") if dim else []
        if len(values) != n * dim:
            raise ProtocolError(f"output {name!r} holds {len(values)} values for shape {shape}")
        return [values[i * dim:(i + 1) * dim] for i in range(n)]
    if datatype != "BYTES":
        raise ProtocolError(f"output {name!r} is {datatype}: a classifier answers BYTES JSON "
                            "{label, score} per input")
    if len(data) != n:
        raise ProtocolError(f"output {name!r} holds {len(data)} elements for {n} inputs")
    out: list[Any] = []
    for i, item in enumerate(data):
        try:
            value = json.loads(item) if isinstance(item, str) else item
        except json.JSONDecodeError:
            raise ProtocolError(f"output {name!r}[{i}] is not JSON: {str(item)[:80]!r}") from None
        if isinstance(value, list) and len(value) == 1:  # a pipeline's per-input list of one top label
            value = value[0]
        label = value.get("label") if isinstance(value, dict) else None
        score = value.get("score") if isinstance(value, dict) else None
        if not isinstance(label, str) or isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ProtocolError(f"output {name!r}[{i}] is {str(item)[:80]!r}, "
                                'not {"label": str, "score": number}')
        out.append(ClassificationOutput(label=label, score=float(score)))
    return out


def parse_response(spec: RemoteModelSpec, body: Any, n: int) -> list[Any]:
    """The ``n`` outputs in input order from a server's JSON answer.

    Raises:
        ProtocolError: the answer does not fit the protocol, the task or ``n``.
    """
    if spec.endpoint.protocol == "openai":
        return _parse_openai(body, n)
    return _parse_v2(spec.endpoint, spec.task, body, n)


def server_message(response: httpx.Response, limit: int = 300) -> str:
    """The server's error text: the ``error``/``detail``/``message`` of a JSON body, else the body, trimmed."""
    return _server_text(response.content, response.text, response.reason_phrase, limit)


def _server_text(content: bytes, text: str, reason: str, limit: int = 300) -> str:
    """``server_message`` of an answer's raw ``content``, its decoded ``text`` and the status line's ``reason``."""
    try:
        body = json.loads(content) if content else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:limit]
    return (text or reason or "").strip()[:limit]


# --- the servable variant -------------------------------------------------------------------------------------------

_RETRYABLE_STATUS = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class _Answer:
    """An inference server's HTTP answer: status, body (content-encoding decoded) and the status line's reason."""

    status: int
    content: bytes
    reason: str

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")


class _NoAnswer(Exception):
    """A request that got no HTTP answer. ``kind`` names the failure as httpx does (``ConnectError``,
    ``RemoteProtocolError``, ``ReadError``...) whichever client sent it, so ``serving.error`` messages read the
    same; ``retryable``: whether the request may not have reached a model (a retry is then harmless)."""

    def __init__(self, kind: str, detail: str, retryable: bool) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retryable = retryable


@dataclass(slots=True)
class _EndpointState:
    breaker: CircuitBreaker
    budget: RetryBudget
    slots: asyncio.Semaphore  # requests in flight to this endpoint, across the variants naming it
    attempts: int = 0  # requests sent to the server (retries included): tests and the bench read it


class RemoteEndpoints:
    """The HTTP client pool, breakers and retry budgets shared by every remote variant of one worker.

    One pooled ``aiohttp.ClientSession`` for all endpoints (keep-alive connections per origin), created on first
    use in the event loop that serves; one :class:`CircuitBreaker`, :class:`RetryBudget` and bound of
    ``max_in_flight`` concurrent requests per endpoint (``url`` + ``model``), shared by the variants that name it.

    Why aiohttp for inference requests: its C HTTP parser and lighter request path cost ~0.16 ms of CPU per
    exchange against ~0.47 ms for httpx's transport and ~0.39 ms for the httpcore pool alone (a canned v2 answer
    of 384 floats on loopback, ``time.thread_time``; bench/RESULTS.md "Remote serving: /predict fast path"), on
    the response path of every remote ``/predict``. The session is set to do what the transport did and no more:
    no cookies kept, no redirects followed, no proxy from the environment (inference servers sit next to the
    service), no timeout of its own (``asyncio.timeout`` bounds each exchange). The registration check
    (:func:`check_endpoint`, blocking) keeps httpx.

    Args:
        settings: concurrency, retry and breaker settings.
        transport: an ``httpx`` transport to send inference requests to instead of the network (tests:
            ``httpx.MockTransport``); the exchange's failures are then httpx's, mapped the same way.
        clock: the breakers' clock (tests).
    """

    #: Seconds an idle connection is kept: under the 5 s idle timeout of uvicorn-based servers (MLServer, KServe),
    #: so titrate drops a connection before the server does instead of sending on one the server is closing.
    KEEPALIVE_SECONDS = 4.0

    def __init__(self, settings: RemoteSettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or RemoteSettings()
        self._transport = transport
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._states: dict[tuple[str, str], _EndpointState] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.settings.max_connections, limit_per_host=0,
                                             keepalive_timeout=self.KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> _Answer:
        """POST ``body`` to ``url`` on a pooled connection and read the whole answer (any status).

        Unbounded in time: the caller bounds it (``asyncio.timeout``, which cancels it).

        Raises:
            _NoAnswer: no HTTP answer came: connection refused or reset, the server closed the connection or
                answered something that is not HTTP (retryable), or another client failure (not retryable).
        """
        if self._transport is not None:
            return await self._post_httpx(self._transport, url, body, headers)
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as response:
                content = await response.read()
                return _Answer(response.status, content, response.reason or "")
        except TimeoutError:
            raise
        except aiohttp.ClientConnectorError as exc:
            raise _NoAnswer("ConnectError", str(exc), True) from None
        except aiohttp.ServerDisconnectedError as exc:
            raise _NoAnswer("RemoteProtocolError", str(exc) or "server disconnected", True) from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise _NoAnswer("RemoteProtocolError", str(exc), True) from None
        except aiohttp.ClientOSError as exc:  # a reset or broken pipe on an established connection
            raise _NoAnswer("ReadError", str(exc), True) from None
        except aiohttp.ClientError as exc:
            raise _NoAnswer(type(exc).__name__, str(exc), False) from None

    @staticmethod
    async def _post_httpx(transport: httpx.AsyncBaseTransport, url: str, body: bytes,
                          headers: dict[str, str]) -> _Answer:
        try:
            request = httpx.Request("POST", url, content=body, headers=headers)
            response = await transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise TimeoutError from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise _NoAnswer(type(exc).__name__, str(exc), True) from None
        except httpx.HTTPError as exc:
            raise _NoAnswer(type(exc).__name__, str(exc), False) from None
        return _Answer(response.status_code, response.content, response.reason_phrase)

    def state(self, endpoint: Endpoint) -> _EndpointState:
        """The breaker and budget of ``endpoint`` (by url and model)."""
        key = (endpoint.url, endpoint.model)
        state = self._states.get(key)
        if state is None:
            state = _EndpointState(
                CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_reset_seconds, self._clock),
                RetryBudget(self.settings.retry_budget),
                asyncio.Semaphore(self.settings.max_in_flight),
            )
            self._states[key] = state
        return state

    def variant(self, spec: RemoteModelSpec) -> RemoteVariant:
        """The servable variant of ``spec`` (no network call)."""
        return RemoteVariant(spec, self)

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class RemoteVariant:
    """A remote model variant: :meth:`apredict_batch` sends one inference request per ``max_batch`` texts.

    The :class:`models.batching.DynamicBatcher` runs up to :attr:`max_in_flight` of these calls at once; every
    failure is a :class:`models.errors.ModelServingError` naming the endpoint and quoting the server.
    """

    remote: ClassVar[bool] = True

    def __init__(self, spec: RemoteModelSpec, endpoints: RemoteEndpoints) -> None:
        self.spec = spec
        self._endpoints = endpoints

    @property
    def key(self) -> str:
        """The model key."""
        return self.spec.key

    @property
    def max_in_flight(self) -> int:
        """Inference requests this variant may have in flight at once."""
        return self._endpoints.settings.max_in_flight

    @property
    def endpoint_state(self) -> _EndpointState:
        """Its endpoint's breaker, retry budget and attempt counter."""
        return self._endpoints.state(self.spec.endpoint)

    def describe(self) -> dict[str, Any]:
        """What serves: key, task, the endpoint (headers unexpanded), batch cap, concurrency, breaker state."""
        return {"key": self.key, "task": self.spec.task, "remote": True, **self.spec.endpoint.to_dict(),
                "max_batch": self.spec.max_batch, "max_in_flight": self.max_in_flight,
                "breaker": self.endpoint_state.breaker.state}

    def close(self) -> None:
        """Nothing to release: the HTTP client belongs to :class:`RemoteEndpoints`."""

    async def apredict_batch(self, texts: Sequence[str]) -> list[Any]:
        """One output per text, in input order, from the server (one request per ``max_batch`` texts).

        Raises:
            ModelServingError: the endpoint failed, timed out, answered off-protocol, or its breaker is open
                (:class:`CircuitOpen`, raised without contacting the server).
        """
        items = check_texts(texts)
        outputs: list[Any] = []
        step = self.spec.max_batch
        for start in range(0, len(items), step):
            outputs.extend(await self._call(items[start:start + step]))
        return outputs

    async def _call(self, texts: list[str]) -> list[Any]:
        endpoint = self.spec.endpoint
        state = self.endpoint_state
        breaker = state.breaker
        if not breaker.allow():
            raise CircuitOpen(self.key, f"circuit breaker open for {endpoint.describe()} after "
                                        f"{breaker.failure_threshold} consecutive failures "
                                        f"(last: {breaker.last_error}); next trial in {breaker.retry_in():.1f} s")
        try:
            headers = endpoint.expanded_headers()
        except ModelSpecError as exc:
            breaker.release()
            raise ModelServingError(self.key, f"{exc.field} {exc.message}") from None
        state.budget.deposit()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + endpoint.timeout_ms / 1000.0
        # orjson: encoding the body and decoding 384 floats per text are on the response path (json: ~4× slower).
        body = orjson.dumps(request_body(endpoint, texts))
        headers = {**headers, "content-type": "application/json"}
        retries_left = self._endpoints.settings.retries
        attempt = 0
        try:
            while True:
                remaining = deadline - loop.time()
                error, retryable = await self._attempt(body, headers, remaining, texts, state)
                if isinstance(error, list):
                    breaker.success()
                    return error
                attempt += 1
                # Retry only what never reached a model, or a server saying "try again" (and inference is a pure
                # function of its inputs, so a repeated request is harmless) — within the deadline and the budget.
                backoff = 0.005 * 2 ** (attempt - 1)
                if (retryable and retries_left > 0 and deadline - loop.time() > backoff
                        and state.budget.withdraw()):
                    retries_left -= 1
                    await asyncio.sleep(backoff)
                    continue
                breaker.failure(error)
                raise ModelServingError(self.key, error)
        except asyncio.CancelledError:
            breaker.release()
            raise

    async def _attempt(self, body: bytes, headers: dict[str, str], remaining: float, texts: list[str],
                       state: _EndpointState) -> tuple[list[Any] | str, bool]:
        """One HTTP request: ``(outputs, False)`` or ``(error message, retryable)``."""
        endpoint = self.spec.endpoint
        if remaining <= 0:
            return f"{endpoint.describe()} timed out after {endpoint.timeout_ms} ms", False
        try:
            # asyncio.timeout bounds the whole exchange (a free slot, pool wait, connect, send, every read): a
            # client's own timeouts apply to each phase separately, so a server trickling bytes could outlast them.
            async with asyncio.timeout(remaining), state.slots:
                state.attempts += 1
                answer = await self._endpoints.post(endpoint.infer_url, body, headers)
        except TimeoutError:
            return f"{endpoint.describe()} timed out after {endpoint.timeout_ms} ms", False
        except _NoAnswer as exc:
            return f"{endpoint.describe()} {'unreachable' if exc.retryable else 'failed'}: {exc}", exc.retryable
        if answer.status != 200:
            message = _server_text(answer.content, answer.text, answer.reason)
            return f"{endpoint.describe()} answered {answer.status}: {message}", answer.status in _RETRYABLE_STATUS
        try:
            return parse_response(self.spec, orjson.loads(answer.content), len(texts)), False
        except orjson.JSONDecodeError:
            return f"{endpoint.describe()} answered non-JSON: {answer.text[:120]!r}", False
        except ProtocolError as exc:
            return f"{endpoint.describe()} answered off-protocol: {exc}", False


# --- the registration check -----------------------------------------------------------------------------------------


class EndpointCheckError(Exception):
    """Registration refused: ``status`` 422 (the spec names something wrong) or 424 (the server failed).

    Attributes:
        field: the spec field at fault (``"endpoint.url"``, ``"endpoint.model"``, ``"endpoint.input_name"``...).
        message: the reason, quoting the server.
        status: 422 or 424.
    """

    def __init__(self, field: str, message: str, status: int) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def _get(client: httpx.Client, method: str, url: str, endpoint: Endpoint, headers: dict[str, str],
         **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, url, headers=headers, timeout=endpoint.timeout_ms / 1000.0, **kwargs)
    except httpx.TimeoutException:
        raise EndpointCheckError("endpoint.url", f"{url} did not answer within {endpoint.timeout_ms} ms", 424) from None
    except httpx.HTTPError as exc:
        raise EndpointCheckError("endpoint.url", f"{url} is unreachable: {type(exc).__name__}: {exc}", 424) from None


def _refusal(response: httpx.Response, endpoint: Endpoint, what: str) -> EndpointCheckError:
    status, message = response.status_code, server_message(response)
    text = f"{what}: {endpoint.describe()} answered {status}: {message}"
    if status in (401, 403):
        return EndpointCheckError("endpoint.headers", text, 422)
    if status == 404:
        return EndpointCheckError("endpoint.model", text, 422)
    if 400 <= status < 500:
        return EndpointCheckError("endpoint", text, 422)
    return EndpointCheckError("endpoint.url", text, 424)


def _tensor_names(metadata: Any, kind: str) -> list[str]:
    tensors = metadata.get(kind) if isinstance(metadata, dict) else None
    if not isinstance(tensors, list):
        return []
    return [t["name"] for t in tensors if isinstance(t, dict) and isinstance(t.get("name"), str)]


def check_endpoint(spec: RemoteModelSpec, *, client: httpx.Client | None = None) -> RemoteModelSpec:
    """Check that ``spec``'s server serves its model as the spec says; return the spec to store. Blocking.

    v2: ``GET /v2/models/{model}/ready`` (200), the metadata ``GET /v2/models/{model}`` (the input tensor
    ``input_name`` exists; ``output_name`` exists, or is resolved when the model has exactly one output), then a
    one-text inference whose answer must parse for the task. openai: the one-text probe.

    Raises:
        EndpointCheckError: 422 naming the field (unknown model, wrong tensor names, refused headers, an answer
            off-protocol), 424 when the server is unreachable, not ready or failing.
    """
    endpoint = spec.endpoint
    try:
        headers = endpoint.expanded_headers()
    except ModelSpecError as exc:
        raise EndpointCheckError(exc.field, exc.message, 422) from None
    owned = client is None
    http = client or httpx.Client(trust_env=False)
    try:
        if endpoint.protocol == "v2":
            base = f"{endpoint.url}/v2/models/{endpoint.model}"
            ready = _get(http, "GET", f"{base}/ready", endpoint, headers)
            if ready.status_code != 200:
                error = _refusal(ready, endpoint, "readiness")
                if error.status == 422:
                    raise error
                raise EndpointCheckError("endpoint.model", f"model {endpoint.model!r} is not ready on {endpoint.url}: "
                                         f"{ready.status_code} {server_message(ready)}", 424)
            meta = _get(http, "GET", base, endpoint, headers)
            if meta.status_code != 200:
                raise _refusal(meta, endpoint, "metadata")
            try:
                metadata = meta.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise EndpointCheckError("endpoint.protocol", f"{base} answered non-JSON metadata", 422) from None
            inputs, outputs = _tensor_names(metadata, "inputs"), _tensor_names(metadata, "outputs")
            if inputs and endpoint.input_name not in inputs:
                raise EndpointCheckError("endpoint.input_name", f"model {endpoint.model!r} has no input tensor "
                                         f"{endpoint.input_name!r}; its inputs are {inputs}", 422)
            if outputs and endpoint.output_name is not None and endpoint.output_name not in outputs:
                raise EndpointCheckError("endpoint.output_name", f"model {endpoint.model!r} has no output tensor "
                                         f"{endpoint.output_name!r}; its outputs are {outputs}", 422)
            if outputs and endpoint.output_name is None:
                if len(outputs) != 1:
                    raise EndpointCheckError("endpoint.output_name", f"model {endpoint.model!r} has outputs "
                                             f"{outputs}: name the one to read", 422)
                spec = RemoteModelSpec(spec.key, spec.task, _with_output(endpoint, outputs[0]), spec.max_batch)
        probe = _get(http, "POST", spec.endpoint.infer_url, endpoint, headers,
                     json=request_body(spec.endpoint, [PROBE_TEXT]))
        if probe.status_code != 200:
            raise _refusal(probe, endpoint, "probe inference")
        try:
            body = probe.json()
            if spec.endpoint.protocol == "v2" and spec.endpoint.output_name is None:
                name = _v2_output(spec.endpoint, body).get("name")
                if isinstance(name, str):
                    spec = RemoteModelSpec(spec.key, spec.task, _with_output(spec.endpoint, name), spec.max_batch)
            parse_response(spec, body, 1)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointCheckError("endpoint.protocol", "the probe inference answered non-JSON", 422) from None
        except ProtocolError as exc:
            where = "endpoint.output_name" if spec.endpoint.protocol == "v2" else "endpoint.protocol"
            raise EndpointCheckError(where, f"the probe inference's answer does not fit a {spec.task} model: {exc}",
                                     422) from None
    finally:
        if owned:
            http.close()
    return spec


def _with_output(endpoint: Endpoint, name: str) -> Endpoint:
    return Endpoint(url=endpoint.url, protocol=endpoint.protocol, model=endpoint.model,
                    timeout_ms=endpoint.timeout_ms, headers=endpoint.headers, input_name=endpoint.input_name,
                    output_name=name)

