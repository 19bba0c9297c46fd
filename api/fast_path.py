"""What the pure-ASGI fast paths beside the router share (``api.assignment.fast_path``, ``api.serving.fast_path``,
``api.analysis.fast_path``): the header check before any work, reading the body so that a request handed on to the
full stack can be replayed exactly, and the replay itself."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope


def has_authorization(scope: Scope) -> bool:
    """Whether the request carries an ``Authorization`` header (a keyless one is the full stack's 401)."""
    return any(name == b"authorization" for name, _ in scope["headers"])


async def read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """Every message of the request body as received, and the body joined; None for the body when the client
    disconnected first (the full stack deals with that, given the messages again through :func:`replay`)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` giving ``messages`` again, then the real ``receive``'s."""
    pending = list(messages)

    async def _receive() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return _receive
