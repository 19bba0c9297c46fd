"""The baseline of bench_assign.py: a bare FastAPI route answering a constant JSON body of the same size as
``/v1/assign``'s answer — what the framework and server cost with none of titrate's logic."""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.responses import Response

BODY = os.environ.get("BARE_BODY", '{"assignments":{"bench":{"variant":"treatment","payload":{}}}}').encode()

app = FastAPI()


@app.post("/v1/assign")
async def assign() -> Response:
    """Constant answer."""
    return Response(BODY, media_type="application/json")
