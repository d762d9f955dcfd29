"""api_logs rows for calls to the gateway's admin API (/admin/v1/...).

Each admin handler is wrapped where it is defined (``endpoint`` or ``logged`` in
gateway/web/http.py), so proxied calls pay nothing for this; the wrapper calls the
``CALL_LOG`` hook of the application, which the app sets to a :class:`CallLog`. A row has route
``admin``, the caller's tenant and key once authenticated (refusals included), headers
redacted as for proxied calls, and no bodies: admin requests and answers carry tokens
and secrets, so both are stored as format ``omitted`` with their size.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway.capture.record import EMPTY_BODY, capture_headers, omitted
from gateway.web.http import CALLER, Handler

if TYPE_CHECKING:
    from gateway.auth.keys import ApiKey
    from gateway.capture.exchange import Exchange
    from gateway.proxy.pipeline import Proxy

ADMIN_ROUTE = "admin"  # the route name of admin API rows (api_logs.route, metrics label)
INTERNAL_ERROR = 500


class CallLog:
    """Writes admin API rows through the proxy's bookkeeping (metrics, writer, access log)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.redact = proxy.default_policy.redact_headers

    async def run(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Call ``handler`` and log the call, however it ends."""
        ex = self.proxy.exchange_for(request)
        ex.route = ADMIN_ROUTE
        ex.request_headers = capture_headers(request.headers.items(), self.redact)
        ex.query = self.proxy.default_policy.query(request.rel_url.raw_query_string)
        size = request.content_length or 0
        ex.request_body = omitted(size) if size else EMPTY_BODY
        try:
            resp = await handler(request)
        except asyncio.CancelledError:
            self.proxy.note_cancelled(request, ex)
            raise
        except BaseException:
            ex.status = INTERNAL_ERROR
            ex.fail("internal_error", "the admin API failed to handle this request")
            raise
        else:
            _answered(ex, resp)
            return resp
        finally:
            _attribute(ex, request.get(CALLER))
            self.proxy.record(ex)


def _answered(ex: Exchange, resp: web.StreamResponse) -> None:
    ex.status = resp.status
    ex.response_headers = [[k, v] for k, v in resp.headers.items()]
    body = resp.body if isinstance(resp, web.Response) else None
    size = len(body) if isinstance(body, bytes) else 0
    ex.response_body = omitted(size) if size else EMPTY_BODY
    if resp.status >= 400 and isinstance(body, bytes):
        try:  # the gateway's own JSON error: its code and message (never secrets)
            payload = orjson.loads(body)
            ex.fail(str(payload["code"]), str(payload.get("message", "")))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            ex.fail("http_error", f"admin API answered {resp.status}")


def _attribute(ex: Exchange, key: Any) -> None:
    if key is None:
        return
    caller: ApiKey = key
    ex.tenant_id, ex.api_key_id = caller.tenant_id_str, caller.id_str
    ex.external_system = caller.external_system
