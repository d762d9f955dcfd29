"""Pure webhook logic: retry decisions, Retry-After, payload shaping, SSRF policy, settings,
routes.yaml `emit`."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook
from yarl import URL

from gateway.crypto import SecretBox
from gateway.errors import ConfigError, SettingsError
from gateway.routes import parse_routes
from gateway.settings import Settings
from gateway.webhooks.catalogue import unknown_patterns
from gateway.webhooks.model import AttemptResult, AuthType, Claimed, DeliveryStatus
from gateway.webhooks.payload import Signer, build_body, render_template, select_fields
from gateway.webhooks.policy import (
    AttemptOutcome,
    RetryPolicy,
    SubscriptionEffect,
    decide,
    parse_retry_after,
)
from gateway.webhooks.shapes import new_secret
from gateway.webhooks.ssrf import (
    AddressPolicy,
    GuardedResolver,
    canonical_host,
    embedded_ipv4,
    literal_refusal,
)

SVIX = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
FAILED = AttemptOutcome(AttemptResult.HTTP_ERROR, 500)


def test_default_schedule_with_jitter() -> None:
    policy = RetryPolicy(8, SVIX)
    rng = random.Random(7)
    for attempt in range(1, 8):
        d = decide(FAILED, attempt, policy, rng)
        base = SVIX[attempt]
        assert d.status is DeliveryStatus.PENDING and d.effect is SubscriptionEffect.FAILED
        assert base * 0.8 <= d.delay <= base * 1.2
    assert decide(FAILED, 8, policy, rng).status is DeliveryStatus.FAILED


def test_exponential_backoff_is_capped() -> None:
    policy = RetryPolicy(10, SVIX, backoff=(1.0, 3.0, 20.0))
    assert [policy.base_delay(n) for n in (1, 2, 3, 4)] == [1.0, 3.0, 9.0, 20.0]


def test_delivered_gone_released_and_retry_after() -> None:
    policy = RetryPolicy(5, SVIX)
    ok = decide(AttemptOutcome(AttemptResult.DELIVERED, 204), 1, policy)
    assert ok.status is DeliveryStatus.DELIVERED and ok.effect is SubscriptionEffect.SUCCEEDED
    gone = decide(AttemptOutcome(AttemptResult.HTTP_ERROR, 410), 1, policy)
    assert gone.status is DeliveryStatus.FAILED and gone.effect is SubscriptionEffect.GONE
    released = decide(AttemptOutcome(AttemptResult.RELEASED), 5, policy)
    assert released.status is DeliveryStatus.PENDING and released.delay == 0
    busy = AttemptOutcome(AttemptResult.HTTP_ERROR, 429, retry_after=42.0)
    assert decide(busy, 1, policy).delay == 42.0
    teapot = AttemptOutcome(AttemptResult.HTTP_ERROR, 418, retry_after=42.0)
    assert decide(teapot, 1, policy).delay != 42.0  # only 429, 502, 503, 504 are honoured


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_overload_answers_pause_the_whole_endpoint(status: int) -> None:
    policy = RetryPolicy(2, (0.0, 10.0))
    told = decide(AttemptOutcome(AttemptResult.HTTP_ERROR, status, retry_after=30.0), 1, policy)
    assert told.status is DeliveryStatus.PENDING and told.delay == told.pause == 30.0
    untold = decide(AttemptOutcome(AttemptResult.HTTP_ERROR, status), 1, policy)
    assert untold.pause == untold.delay and 8.0 <= untold.delay <= 12.0
    last = decide(AttemptOutcome(AttemptResult.HTTP_ERROR, status, retry_after=5.0), 2, policy)
    assert last.status is DeliveryStatus.FAILED and last.pause == 5.0  # the endpoint still rests
    for other in (500, 404, 418):
        assert decide(AttemptOutcome(AttemptResult.HTTP_ERROR, other), 1, policy).pause is None
    assert decide(AttemptOutcome(AttemptResult.TIMEOUT), 1, policy).pause is None


def test_unknown_patterns_against_the_catalogue() -> None:
    declared = ["reservation.created", "reservation.room.assigned"]
    patterns = ["*", "reservation.*", "reservation.room.*", "folio.*", "guest.created"]
    assert unknown_patterns(patterns, declared) == ["folio.*", "guest.created"]
    assert unknown_patterns(["webhook.*", "webhook.delivery.failed"], declared) == []


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30)), now) == 30.0
    assert parse_retry_after("999999999") == 24 * 3600.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def _claimed(**over: Any) -> Claimed:
    base = Claimed(
        id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        event_id=uuid.UUID(int=1),
        subscription_id=uuid.uuid4(),
        webhook_id="msg_1",
        attempt_number=1,
        lease_owner="w:1",
        event_type="reservation.created",
        payload={"reservation": {"id": 7}, "guest": {"name": "Ada"}},
        event_created_at=datetime(2026, 11, 25, tzinfo=UTC),
        url="https://example.com",
        auth_type=AuthType.NONE,
        auth_secret=None,
        secret="",
        previous_secret=None,
        max_attempts=8,
        retry_schedule=None,
        backoff=None,
        attempt_timeout=15.0,
        payload_fields=None,
        payload_template=None,
        external_system=None,
    )
    return replace(base, **over)


def test_body_envelope_fields_and_template() -> None:
    import orjson

    d = _claimed()
    assert orjson.loads(build_body(d, d.payload)) == {
        "type": "reservation.created",
        "timestamp": "2026-11-25T00:00:00+00:00",
        "data": d.payload,
    }
    assert select_fields(d.payload, {"id": "reservation.id", "x": "nope"}) == {"id": 7}
    ctx = {"type": "t", "data": {"a": [1, {"b": 2}]}}
    assert render_template({"k": ["{{ data.a.1.b }}", "{{type}}", "{{other}}", 3]}, ctx) == {
        "k": [2, "t", "{{other}}", 3]
    }


def test_coalesced_count_is_in_the_body() -> None:
    import orjson

    d = _claimed(coalesced_count=39)
    assert orjson.loads(build_body(d, d.payload))["replaced"] == 39
    templated = _claimed(coalesced_count=3, payload_template={"n": "{{replaced}}"})
    assert orjson.loads(build_body(templated, {})) == {"n": 3}


def test_v1a_signature_is_ed25519_over_id_timestamp_body() -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gateway.webhooks.model import SignatureScheme
    from gateway.webhooks.payload import new_signing_key

    box = SecretBox([Fernet.generate_key()])
    private, public = new_signing_key()
    assert private.startswith("whsk_") and public.startswith("whpk_")
    d = _claimed(signature_scheme=SignatureScheme.V1A, signing_key=box.encrypt(private))
    body = build_body(d, d.payload)
    headers = Signer(box).headers(d, body, datetime.now(UTC))
    scheme, sig = headers["webhook-signature"].split(",", 1)
    assert scheme == "v1a"
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public[5:]))
    key.verify(base64.b64decode(sig), signed)


def test_signer_signs_with_current_and_previous_secret() -> None:
    box = SecretBox([Fernet.generate_key()])
    current, previous = new_secret(), new_secret()
    d = _claimed(secret=box.encrypt(current), previous_secret=box.encrypt(previous))
    body = build_body(d, d.payload)
    headers = Signer(box).headers(d, body, datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (current, previous):
        Webhook(secret).verify(body, headers)


def test_address_policy() -> None:
    strict = AddressPolicy()
    for address in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1"):
        assert strict.refuses(address), address
    for address in ("::ffff:127.0.0.1", "100.64.0.1", "100.100.100.200", "0.0.0.0", "224.0.0.1"):
        assert strict.refuses(address), address
    assert strict.refuses("93.184.216.34") is None
    assert AddressPolicy(allow_private=True).refuses("127.0.0.1") is None
    import ipaddress

    listed = AddressPolicy(allowed_networks=(ipaddress.ip_network("10.1.0.0/16"),))
    assert listed.refuses("10.1.2.3") is None and listed.refuses("10.2.0.1")


# Loopback in disguise, as the host part of a URL, and what resolvers and browsers make of it.
LOOPBACK_DISGUISES = (
    ("127.0.0.1.", "127.0.0.1"),  # trailing dot (a fully qualified name)
    ("%31%32%37.0.0.1", "127.0.0.1"),  # percent-encoded octets
    ("2130706433", "127.0.0.1"),  # one decimal number
    ("0x7f.1", "127.0.0.1"),  # hex, two parts
    ("0x7F000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),  # octal
    ("127.1", "127.0.0.1"),
    ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1"),  # fullwidth digits (IDNA)
    ("LocalHost.", "localhost"),
    ("[::1]", "::1"),
)
# IPv6 addresses that carry 127.0.0.1: mapped, compatible, 6to4, NAT64, Teredo (client).
LOOPBACK_CARRIERS = (
    "::ffff:127.0.0.1",
    "::127.0.0.1",
    "2002:7f00:1::",
    "64:ff9b::7f00:1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
)


def test_canonical_host_undoes_disguises() -> None:
    for raw, canonical in LOOPBACK_DISGUISES:
        assert canonical_host(raw) == canonical, raw
    assert canonical_host("Example.COM.") == "example.com"
    assert (
        canonical_host("\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444")
        == "xn--e1afmkfd.xn--p1ai"
    )
    assert canonical_host("[fe80::1%25eth0]") == "fe80::1"
    assert canonical_host("93.184.216.34") == "93.184.216.34"
    for bad in ("256.0.0.1", "1.2.3.4.5", "08", "host.09", "4294967296", "%ff"):
        with pytest.raises(ValueError):
            canonical_host(bad)


def test_address_policy_unwraps_ipv4_carried_in_ipv6() -> None:
    import ipaddress

    strict, loopback = AddressPolicy(), ipaddress.IPv4Address("127.0.0.1")
    for address in LOOPBACK_CARRIERS:
        ip = ipaddress.IPv6Address(address)
        assert loopback in embedded_ipv4(ip), address
        reason = strict.refuses(address)
        assert reason is not None and "127.0.0.1, which is loopback" in reason, address
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1")) == ()
    assert "private" in (strict.refuses("2002:a00:1::") or "")  # 6to4 of 10.0.0.1
    assert strict.refuses("::ffff:93.184.216.34") is None  # mapped public: that address
    assert strict.refuses("2002:5db8:d822::") is None  # 6to4 of a public address
    for raw, _ in LOOPBACK_DISGUISES:
        if raw.isascii() and not raw.startswith("Local"):  # names go to the resolver
            assert literal_refusal(URL(f"https://{raw}/h", encoded=True), strict), raw


async def test_guarded_resolver_refuses_names_resolving_to_loopback() -> None:
    resolver = GuardedResolver(AddressPolicy())
    try:
        with pytest.raises(OSError, match="refused addresses"):
            await resolver.resolve("localhost", 443)
    finally:
        await resolver.close()


def test_webhook_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true",
            "GATEWAY_WEBHOOK_RETRY_SCHEDULE": "0, 1.5, 10",
            "GATEWAY_WEBHOOK_DISABLE_AFTER": "3600",
        }
    )
    assert s.webhook_allow_private and not s.webhook_allow_http
    assert s.webhook_retry_schedule == (0.0, 1.5, 10.0)
    assert Settings.from_env({}).webhook_disable_after == 5 * 24 * 3600
    with pytest.raises(SettingsError, match="GATEWAY_WEBHOOK_ALLOW_HTTP: expected bool"):
        Settings.from_env({"GATEWAY_WEBHOOK_ALLOW_HTTP": "maybe"})
    with pytest.raises(SettingsError, match="GATEWAY_WEBHOOK_RETRY_SCHEDULE"):
        Settings.from_env({"GATEWAY_WEBHOOK_RETRY_SCHEDULE": "1,-2"})


ROUTES = """
upstreams:
  main: http://127.0.0.1:9001
routes:
  - name: reservations
    path: /reservations
    methods: [POST, PUT]
    upstream: main
    emit:
{emit}
"""


def test_routes_emit_is_parsed() -> None:
    table = parse_routes(
        ROUTES.format(
            emit="      - {event: reservation.created, status: 201, methods: [POST]}\n"
            "      - {event: reservation.changed}"
        )
    )
    created, changed = table.routes[0].emit
    assert created.matches("POST", 201) and not created.matches("PUT", 201)
    assert not created.matches("POST", 200)
    assert changed.matches("PUT", 204) and not changed.matches("PUT", 404)


@pytest.mark.parametrize(
    ("emit", "message"),
    [
        ("      - {event: Bad Type}", "routes[0] 'reservations': field 'emit'[0].event"),
        ("      - {event: a.b, status: 999}", "field 'emit'[0].status"),
        ("      - {event: a.b, methods: [GET]}", "must be among the route's methods"),
        ("      - {event: a.b, colour: red}", "unknown field 'colour'"),
        ("      - a.b", "field 'emit'[0]: must be a mapping"),
    ],
)
def test_routes_emit_errors_name_route_and_field(emit: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_routes(ROUTES.format(emit=emit), "routes.yaml")
    assert message in str(err.value)


def test_routes_emit_needs_a_keyed_route() -> None:
    with pytest.raises(ConfigError, match="needs a route with a partner key"):
        parse_routes(
            ROUTES.format(emit="      - {event: a.b}").replace(
                "upstream: main\n    emit", "upstream: main\n    public: true\n    emit"
            )
        )
