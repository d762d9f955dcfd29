"""POST /admin/v1/erasures: erase one data subject from the caller's tenant (admin keys)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from gateway.auth.keys import ApiKey, Role
from gateway.erasure import service
from gateway.erasure.model import ErasureRequest, Steps
from gateway.errors import Invalid
from gateway.web.http import POOL, PREFIX, actor, endpoint, read_json_object

STEPS = web.AppKey("erasure_steps", Steps)


def setup(app: web.Application, steps: Steps) -> None:
    """Register the endpoint; ``steps``: each store's erase function (wired by the app)."""
    app[STEPS] = steps
    app.router.add_post(f"{PREFIX}/erasures", create_erasure)


def parse(body: dict[str, Any]) -> ErasureRequest:
    """The request Struct, or 422 naming the field (msgspec's message, no value in it)."""
    try:
        return msgspec.convert(body, ErasureRequest)
    except msgspec.ValidationError as exc:
        raise Invalid(str(exc), code="invalid_erasure") from None


@endpoint([Role.ADMIN])
async def create_erasure(request: web.Request, key: ApiKey) -> Any:
    req = parse(await read_json_object(request))
    result = await service.erase(
        request.app[POOL],
        request.app[STEPS],
        key.tenant_id,
        req,
        actor=actor(key),
        actor_key_id=key.id,
    )
    return msgspec.to_builtins(result)
