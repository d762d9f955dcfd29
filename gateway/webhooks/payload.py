"""What a subscriber receives: the body (envelope, field selection, template), the
Standard Webhooks signature headers and the subscription's auth headers.

Default body (the Standard Webhooks shape)::

    {"type": "reservation.created", "timestamp": "<event time, ISO 8601>", "data": {...}}

``payload.fields`` ({"output": "dotted.path"}) replaces ``data`` by the chosen fields,
renamed; ``payload.template`` replaces the whole body by a JSON value in which the strings
"{{type}}", "{{timestamp}}", "{{event_id}}", "{{data}}" and "{{data.some.path}}" are
replaced by those values (whole strings only, so types are kept).

A delivery that replaced older ones (latest-state coalescing) says how many: the default
body gets ``"replaced": N`` and templates may use ``"{{replaced}}"``.

Signatures: ``v1`` (HMAC-SHA256 with the subscription's whsec_ secret, through the
``standardwebhooks`` package) or ``v1a`` (ed25519 with the tenant's key, over the same
``id.timestamp.body``; the public key is served as ``whpk_<base64>``).
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks.webhooks import Webhook

from gateway.crypto import SecretBox
from gateway.db.pool import json_dumps
from gateway.webhooks.model import AuthType, Claimed, SignatureScheme

USER_AGENT = "IntegrationHub-Gateway-Webhooks/0.1"
PLACEHOLDER_RE = re.compile(r"^\{\{\s*([a-z_]+(?:\.[A-Za-z0-9_-]+)*)\s*\}\}$")
MISSING = object()
SIGNER_CACHE_MAX = 10_000  # decrypted signers kept per process (keyed by ciphertext)


class PayloadTranslator(Protocol):
    async def __call__(
        self, payload: Any, *, tenant_id: uuid.UUID, external_system: str, event_type: str
    ) -> Any: ...


class OutcomeReporter(Protocol):
    async def __call__(
        self,
        *,
        tenant_id: uuid.UUID,
        external_system: str,
        event_type: str,
        payload: Any,
        delivered: bool,
        error: str | None,
    ) -> None: ...


async def translate_payload(
    payload: Any, *, tenant_id: uuid.UUID, external_system: str, event_type: str
) -> Any:
    """Hook: ids in ``payload`` translated to ``external_system``'s own ids.

    Called before each attempt to a subscription that names an external system. This
    default leaves the payload as it is; the gateway passes the integration_mappings
    translator (gateway/mapping/payload.py) as ``Dispatcher(translate=...)`` (app.py).
    """
    return payload


async def on_delivery_outcome(
    *,
    tenant_id: uuid.UUID,
    external_system: str,
    event_type: str,
    payload: Any,
    delivered: bool,
    error: str | None,
) -> None:
    """Hook: record the entity's sync outcome in data_sync_status.

    Called after each attempt to a subscription that names an external system. This
    default records nothing; the gateway passes the sync recorder's reporter
    (gateway/sync/webhooks.py) as ``Dispatcher(report=...)`` (app.py).
    """


def lookup(value: Any, path: str) -> Any:
    """``a.b.0.c`` inside nested objects/arrays; MISSING when absent."""
    for part in path.split(".") if path else []:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def select_fields(data: Any, fields: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name, path in fields.items():
        value = lookup(data, path)
        if value is not MISSING:
            out[name] = value
    return out


def render_template(template: Any, context: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        return {k: render_template(v, context) for k, v in template.items()}
    if isinstance(template, list):
        return [render_template(v, context) for v in template]
    if isinstance(template, str):
        m = PLACEHOLDER_RE.match(template)
        if m:
            head, _, rest = m.group(1).partition(".")
            if head in context:
                value = lookup(context[head], rest)
                return None if value is MISSING else value
    return template


def build_body(d: Claimed, data: Any) -> bytes:
    if d.payload_fields:
        data = select_fields(data, d.payload_fields)
    context = {
        "type": d.event_type,
        "timestamp": d.event_created_at.astimezone(UTC).isoformat(),
        "event_id": str(d.event_id),
        "data": data,
        "replaced": d.coalesced_count,
    }
    if d.payload_template is not None:
        return json_dumps(render_template(d.payload_template, context))
    body = {k: context[k] for k in ("type", "timestamp", "data")}
    if d.coalesced_count:
        body["replaced"] = d.coalesced_count
    return json_dumps(body)


SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"


def new_signing_key() -> tuple[str, str]:
    """A fresh ed25519 key: (``whsk_<base64 seed>``, ``whpk_<base64 public key>``)."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    public = key.public_key().public_bytes_raw()
    return (
        SIGNING_KEY_PREFIX + base64.b64encode(seed).decode(),
        PUBLIC_KEY_PREFIX + base64.b64encode(public).decode(),
    )


def sign_v1a(key: Ed25519PrivateKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks asymmetric signature: ``v1a,<base64 ed25519(id.timestamp.body)>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1a," + base64.b64encode(key.sign(signed)).decode()


class Signer:
    """Standard Webhooks headers; during a rotation grace period both secrets sign."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box
        self._cache: dict[str, Webhook] = {}
        self._keys: dict[str, Ed25519PrivateKey] = {}

    def _ed25519(self, token: str) -> Ed25519PrivateKey:
        key = self._keys.get(token)
        if key is None:
            if len(self._keys) >= SIGNER_CACHE_MAX:
                self._keys.clear()
            seed = base64.b64decode(self.box.decrypt(token)[len(SIGNING_KEY_PREFIX) :])
            key = self._keys[token] = Ed25519PrivateKey.from_private_bytes(seed)
        return key

    def _webhook(self, token: str) -> Webhook:
        hook = self._cache.get(token)
        if hook is None:
            if len(self._cache) >= SIGNER_CACHE_MAX:
                self._cache.clear()
            hook = self._cache[token] = Webhook(self.box.decrypt(token))
        return hook

    def headers(self, d: Claimed, body: bytes, now: datetime) -> dict[str, str]:
        if d.signature_scheme is SignatureScheme.V1A and d.signing_key is not None:
            stamp = int(now.timestamp())
            signatures = [sign_v1a(self._ed25519(d.signing_key), d.webhook_id, stamp, body)]
        else:
            text = body.decode()
            signatures = [self._webhook(d.secret).sign(d.webhook_id, now, text)]
            if d.previous_secret is not None:
                signatures.append(self._webhook(d.previous_secret).sign(d.webhook_id, now, text))
        return {
            "webhook-id": d.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": " ".join(signatures),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }

    def auth_headers(self, auth_type: AuthType, token: str | None) -> dict[str, str]:
        if auth_type is AuthType.NONE or token is None:
            return {}
        value = orjson.loads(self.box.decrypt(token))
        if auth_type is AuthType.BEARER:
            return {"Authorization": f"Bearer {value['token']}"}
        if auth_type is AuthType.BASIC:
            pair = f"{value['username']}:{value['password']}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return dict(value["headers"])
