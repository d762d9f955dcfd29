"""POST /admin/v1/erasures: erase one data subject from the caller's tenant (admin keys)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from gateway.auth.keys import ApiKey, Role
from gateway.erasure import service
from gateway.erasure.model import ErasureRequest, Steps
from gateway.web.contract import FieldError, decode, read_json_bytes
from gateway.web.http import POOL, PREFIX, actor, endpoint

STEPS = web.AppKey("erasure_steps", Steps)


def setup(app: web.Application, steps: Steps) -> None:
    """Register the endpoint; ``steps``: each store's erase function (wired by the app)."""
    app[STEPS] = steps
    app.router.add_post(f"{PREFIX}/erasures", create_erasure)


def parse(data: bytes) -> ErasureRequest:
    """The request Struct, or 422 invalid_erasure naming the field (msgspec's message,
    no value in it); 400 malformed_json when the body is not JSON."""
    try:
        return decode(data, ErasureRequest)
    except FieldError as exc:
        raise FieldError(str(exc), code="invalid_erasure", field=exc.field) from None


@endpoint([Role.ADMIN])
async def create_erasure(request: web.Request, key: ApiKey) -> Any:
    req = parse(await read_json_bytes(request))
    result = await service.erase(
        request.app[POOL],
        request.app[STEPS],
        key.tenant_id,
        req,
        actor=actor(key),
        actor_key_id=key.id,
    )
    return msgspec.to_builtins(result)
