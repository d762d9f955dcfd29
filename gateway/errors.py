"""The gateway's exceptions, all in one tree, and how each maps to an HTTP answer.

::

    GatewayError                      answered as JSON {"code", "message", "request_id"}
    ├── ClientError                   400 bad_request: the caller can fix it
    │   ├── BadRequest                400 bad_request / bad_path / ...
    │   ├── Unauthorized              401 unauthorized (missing, unknown, revoked key)
    │   ├── Forbidden                 403 forbidden (the key's role or system may not)
    │   ├── NotFound                  404 not_found (an admin object, or another tenant's)
    │   ├── RouteNotFound             404 route_not_found
    │   ├── MethodNotAllowed          405 method_not_allowed (carries the Allow list)
    │   ├── RequestTimeout            408 request_timeout (the client stopped sending)
    │   ├── Conflict                  409 conflict
    │   ├── PayloadTooLarge           413 payload_too_large
    │   ├── Invalid                   422 invalid_request (well-formed JSON, wrong content)
    │   ├── RateLimited               429 rate_limited (carries Retry-After)
    │   ├── HeadersTooLarge           431 headers_too_large
    │   ├── ClientGone                499 client_disconnected (logged, never sent)
    │   └── (mapping.flow: MappingNotFound 404/422, Untranslatable 422)
    ├── UpstreamError                 502 upstream_error: the upstream failed us
    │   ├── UpstreamUnavailable       502 upstream_unavailable (also a ConnectionError)
    │   └── UpstreamTimeout           504 upstream_timeout (also a TimeoutError)
    └── ServiceUnavailable            503 not_ready
        └── ShuttingDown              503 shutting_down (a call cut off at shutdown; logged)

Errors that are not HTTP answers themselves (the code that catches them decides)::

    ConfigError                       the configuration is wrong (names file, route, field)
    └── SettingsError                 a GATEWAY_* variable is wrong (names it)
    StoreError                        a store refused or failed an operation
    ├── KeyStoreError                 auth.keys: unknown tenant, bad role, name taken
    ├── MappingStoreError             mapping.store: the database failed a mapping query
    │   └── MappingConflict           an id is already mapped (names the holding row)
    └── WebhookStoreError             webhooks.store: NotFoundError, ConflictError,
                                      InvalidValueError (a CHECK or type refused a value)
    SecretError                       a stored secret cannot be decrypted

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


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="gateway"'}


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


class NotFound(ClientError):
    status = 404
    code = "not_found"


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


class Conflict(ClientError):
    status = 409
    code = "conflict"


class Invalid(ClientError):
    """422: well-formed JSON whose content is wrong (unknown field, wrong type, bad value)."""

    status = 422
    code = "invalid_request"


class RateLimited(ClientError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, int(self.retry_after + 0.999)))}


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
    """The configuration is invalid (routes.yaml, a key file, ...); the message names the
    file and field."""


class SettingsError(ConfigError):
    """A ``GATEWAY_*`` environment variable is invalid; the message names it."""


class StoreError(Exception):
    """A store refused or failed an operation; driver exceptions are wrapped in one."""


class SecretError(Exception):
    """A stored secret could not be decrypted (wrong or missing key, or corrupted)."""
