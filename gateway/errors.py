"""The gateway's exception tree, and how each maps to an HTTP answer.

::

    GatewayError                      base; carries status, stable ``code`` and a message
    ├── ClientError                   4xx: the caller can fix it
    │   ├── RouteNotFound             404 route_not_found
    │   ├── MethodNotAllowed          405 method_not_allowed (carries the Allow list)
    │   ├── BadRequest                400 bad_request / bad_path / ...
    │   ├── RequestTimeout            408 request_timeout (the client stopped sending)
    │   └── PayloadTooLarge           413 payload_too_large
    ├── UpstreamError                 502 upstream_error: the upstream failed us
    │   ├── UpstreamUnavailable       502 upstream_unavailable (refused, reset, DNS)
    │   └── UpstreamTimeout           504 upstream_timeout (also a TimeoutError)
    └── ServiceUnavailable            503 not_ready
        └── ShuttingDown              503 shutting_down (a call cut off at shutdown; logged)

Start-time problems are not HTTP answers and live apart:

    ConfigError                       routes.yaml is wrong (names file, route, field)
    SettingsError                     a GATEWAY_* variable is wrong (names it)
    StoreError                        a database operation failed (wraps asyncpg errors)

Messages are written for the caller and never carry secrets or stack traces.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error answered to the client as JSON ``{"code", "message", "request_id"}``."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}

    def details(self) -> dict[str, Any]:
        """Extra fields of the JSON answer (e.g. which field held an unknown id)."""
        return {}


class ClientError(GatewayError):
    status = 400
    code = "bad_request"


class BadRequest(ClientError):
    pass


class RouteNotFound(ClientError):
    status = 404
    code = "route_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"


class ClientGone(ClientError):
    """The caller hung up before its request was read: logged as nginx's 499."""

    status = 499
    code = "client_disconnected"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class HeadersTooLarge(ClientError):
    status = 431
    code = "headers_too_large"


class UpstreamError(GatewayError):
    status = 502
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError, ConnectionError):
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError, TimeoutError):
    status = 504
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    code = "not_ready"


class ShuttingDown(ServiceUnavailable):
    """A call the gateway itself cut off while shutting down (logged; the caller sees the
    connection close)."""

    code = "shutting_down"


class ConfigError(Exception):
    """routes.yaml (or another config file) is invalid; the message names file and field."""


class SettingsError(Exception):
    """A ``GATEWAY_*`` environment variable is invalid; the message names it."""


class StoreError(Exception):
    """A database operation failed; wraps the driver's exception."""
