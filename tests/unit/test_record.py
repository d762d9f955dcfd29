"""Body description, redaction and sanitising: rows that can never poison a COPY batch."""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.record import (
    DEFAULT_REDACT_FIELDS,
    REDACTED,
    Redactor,
    capture_headers,
    capture_raw_headers,
    clean_text,
    describe_body,
    describe_serialised,
    uuid7,
)


def has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


R = Redactor(DEFAULT_REDACT_FIELDS | {"passport"})


def test_json_body_is_stored_as_json_with_fields_redacted() -> None:
    data = orjson.dumps({"guest": {"Password": "x", "passport": "P1"}, "items": [{"cvv": 1}]})
    b = describe_body(data, len(data), 1000, R, "application/json")
    assert b.format == "json" and not b.truncated and b.size == len(data)
    assert b.value == {
        "guest": {"Password": "[REDACTED]", "passport": "[REDACTED]"},
        "items": [{"cvv": "[REDACTED]"}],
    }


def test_text_binary_empty_and_truncated() -> None:
    assert describe_body(b"", 0, 100, R).format == "empty"
    t = describe_body("héllo".encode(), 6, 100, R, "text/plain")
    assert (t.format, t.value) == ("text", "héllo")
    raw = b"\xff\x00\x01"
    bin_ = describe_body(raw, 3, 100, R)
    assert bin_.format == "binary" and base64.b64decode(bin_.value["base64"]) == raw
    cut = describe_body("ééééé".encode(), 10, 5, R)  # cap falls inside a character
    assert cut.truncated and cut.value == "éé" and cut.size == 10
    partial = describe_body(b'{"a": 1, "password": "secret-value", "b": 2}', 200, 1000, R)
    assert partial.truncated and partial.format == "text"
    assert "secret-value" not in partial.value


def test_form_bodies_are_redacted() -> None:
    b = describe_body(
        b"user=ada&password=hunter2&x=1", 29, 100, R, "application/x-www-form-urlencoded"
    )
    assert b.value == "user=ada&password=[REDACTED]&x=1"


def test_nul_and_surrogates_are_made_storable() -> None:
    data = b'{"a": "x\\u0000y", "k\\u0000": 1}'
    b = describe_body(data, len(data), 100, R)
    assert b.value == {"a": "x\ufffdy", "k\ufffd": 1}
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("bad \udcff surrogate") == "bad \ufffd surrogate"
    hdrs = capture_headers(
        [("X-A", "v\udcff"), ("Cookie", "s=1"), ("X-A", "2")], frozenset({"cookie"})
    )
    assert hdrs == [["X-A", "v\ufffd"], ["Cookie", "[REDACTED]"], ["X-A", "2"]]


_NAME = st.sampled_from(
    [b"Cookie", b"SET-COOKIE", b"x_api_key", b"X-Api_Key", b"X-Trace", b"x-\xc9", b"\xc9tag"]
)
_VALUE = st.one_of(
    st.binary(max_size=12), st.sampled_from([b"ok", b"a\x00b", "Zo\u00eb".encode(), b"\xff"])
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(st.tuples(_NAME, _VALUE), max_size=6),
    redact=st.sampled_from(
        [frozenset(), frozenset({"cookie", "set-cookie", "x-api-key"}), frozenset({"x-\xe9"})]
    ),
)
def test_raw_headers_are_captured_as_their_decoded_form_would_be(
    raw: list[tuple[bytes, bytes]], redact: frozenset[str]
) -> None:
    """capture_raw_headers (the proxy's answers, as bytes with lowered names) stores what
    capture_headers stores for the same headers decoded as aiohttp decodes them."""
    decoded = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in raw]
    names = [n.lower() for n, _ in raw]
    assert capture_raw_headers(raw, names, redact) == capture_headers(decoded, redact)


def test_gzip_bodies_are_decoded_for_the_log() -> None:
    raw = gzip.compress(b'{"token": "abc", "ok": true}')
    b = describe_body(raw, len(raw), 1000, R, "application/json", "gzip")
    assert b.value == {"token": "[REDACTED]", "ok": True}


def test_uuid7_is_time_ordered() -> None:
    now = time.time()
    a, b = uuid7(now), uuid7(now + 0.002)
    assert a.version == 7 and a < b and a.int >> 80 == int(now * 1000)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300),
    cap=st.integers(0, 400),
    ctype=st.sampled_from(["", "application/json", "text/plain"]),
)
def test_any_bytes_become_a_storable_body(data: bytes, cap: int, ctype: str) -> None:
    b = describe_body(data, len(data), cap, R, ctype)
    assert not has_nul(orjson.loads(orjson.dumps(b.value)))  # jsonb refuses \u0000
    assert b.size == len(data)
    assert b.truncated == (len(data) > cap)


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_json_round_trips_or_is_sanitised(value: object) -> None:
    data = orjson.dumps(value)
    b = describe_body(data, len(data), 1 << 20, Redactor(frozenset()), "application/json")
    assert b.format == "json"
    assert not has_nul(b.value)
    if b"\\u0000" not in data:
        assert b.value == value


def test_clean_json_is_stored_as_received_and_rows_hold_no_containers() -> None:
    import gc
    from datetime import UTC, datetime

    from gateway.capture.exchange import CapturePolicy, Exchange
    from gateway.capture.record import REDACTED, stored_body
    from gateway.routes import CaptureOptions

    policy = CapturePolicy.build(CaptureOptions(), 65536, frozenset({"password"}), frozenset())
    clean = b'{"id": "r-1", "rooms": [{"n": 1}], "note": "caf\xc3\xa9"}'
    body = policy.body(True, clean, len(clean), "application/json", "")
    assert body.raw == clean and body.value["rooms"] == [{"n": 1}]
    assert orjson.dumps(stored_body(body)) == clean  # written verbatim, not re-serialised
    secret = b'{"user": "ada", "password": "hunter2"}'
    redacted = policy.body(True, secret, len(secret), "application/json", "")
    assert redacted.raw is None
    assert orjson.loads(orjson.dumps(stored_body(redacted)))["password"] == REDACTED
    escaped = b'{"a": "\\u00e9"}'
    assert policy.body(True, escaped, len(escaped), "application/json", "").raw is None
    ex = Exchange(
        created_at=datetime.now(UTC),
        started=0.0,
        request_id="r",
        method="POST",
        path="/x",
        query="",
        request_headers=[["Content-Type", "application/json"]],
        client_ip=None,
        user_agent=None,
        request_body=body,
        response_headers=[["X", "1"]],
        response_body=redacted,
        translated={"request": {"/id": 1}},
    )
    row = ex.to_row(1.0)
    # Rows wait in the queue: no dict or list in them for the garbage collector to scan.
    assert not any(isinstance(v, dict | list) or gc.is_tracked(v) for v in row[11:])


def test_a_parse_is_shared_only_for_the_exact_bytes_stored_as_received() -> None:
    """ID translation may rewrite capture's parsed value only when the row keeps the raw
    bytes: complete, unredacted, no escapes. Otherwise it must parse its own copy."""
    redactor = Redactor(DEFAULT_REDACT_FIELDS)
    clean = b'{"guest_id": "G-1", "items": [{"room_id": "101"}]}'
    body = describe_body(clean, len(clean), 1000, redactor, "application/json")
    assert body.parsed_from(clean) == orjson.loads(clean)
    assert (
        body.parsed_from(bytes(bytearray(clean))) is None
    )  # equal bytes, but not the ones captured
    for other in (
        b'{"guest_id": "G-1", "password": "x"}',  # redacted: the value is not the body
        b'{"guest_id": "G-\\u0031"}',  # an escape: stored re-serialised
    ):
        captured = describe_body(other, len(other), 1000, redactor, "application/json")
        assert captured.parsed_from(other) is None
    cut = describe_body(clean, len(clean), 10, redactor, "application/json")
    assert cut.parsed_from(clean) is None


def test_a_body_the_gateway_serialised_is_stored_without_a_new_parse() -> None:
    redactor = Redactor(DEFAULT_REDACT_FIELDS)
    value: dict[str, Any] = {"guest_id": "G-1", "card": {"CVV": "123"}}
    data = orjson.dumps(value)
    body = describe_serialised(value, data, 1000, redactor)
    assert body.format == "json" and body.raw is None  # redacted, so re-serialised
    assert body.value == {"guest_id": "G-1", "card": {"CVV": "[REDACTED]"}}
    assert value["card"]["CVV"] == "123"  # what the partner gets is left alone
    plain = {"guest_id": "G-1"}
    stored = describe_serialised(plain, orjson.dumps(plain), 1000, redactor)
    assert stored.raw == b'{"guest_id":"G-1"}' and stored.size == len(stored.raw)
    nul = {"note": "a\x00b"}
    assert describe_serialised(nul, orjson.dumps(nul), 1000, redactor).value == {"note": "a\ufffdb"}
    big = describe_serialised(plain, orjson.dumps(plain), 5, redactor)
    assert big.truncated and big.format == "text" and big.size == len(orjson.dumps(plain))


# -- the redaction prefilter: a miss would leak a field, a false positive only costs a walk


def _cases(name: str) -> list[str]:
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(name))
    return [name, name.upper(), name.title(), mixed]


def test_prefilter_finds_every_field_as_key_form_field_or_quoted_name_in_any_case() -> None:
    for field in sorted(R.fields):
        for name in _cases(field):
            assert R.mentions(orjson.dumps({"a": 1, "b": {name: "s"}})), name
            assert R.mentions(orjson.dumps([{"x": [1, {name: None}]}])), name
            assert R.mentions(f'{{"a": 1, "{name}" : "v"'.encode()), name  # truncated JSON
            assert R.mentions(f"{name}=v&x=1".encode()), name
            assert R.mentions(f"x=1&{name}=v".encode()), name


def test_prefilter_finds_keys_spelt_with_escapes_or_lookalike_letters() -> None:
    escaped = b'{"ok": 1, "pass\\u0077ord": "hunter2"}'
    assert R.mentions(escaped)
    assert describe_body(escaped, len(escaped), 100, R).value == {"ok": 1, "password": REDACTED}
    kelvin = '{"to\u212aen": "abc"}'.encode()  # KELVIN SIGN: "to\u212aen".lower() == "token"
    assert R.mentions(kelvin)
    assert describe_body(kelvin, len(kelvin), 100, R).value == {"to\u212aen": REDACTED}
    long_s = "x=1&\u017fecret=abc".encode()  # LONG S matches s under re.IGNORECASE
    assert R.mentions(long_s)
    assert "abc" not in describe_body(long_s, len(long_s), 100, R, "text/plain").value


def test_prefilter_ignores_names_inside_longer_words_and_values() -> None:
    body = orjson.dumps({"company": "Span tokens", "url": "https://a/?apikeys=1", "n": 2})
    assert not R.mentions(body)
    stored = describe_body(body, len(body), 1000, R, "application/json")
    assert stored.raw == body  # nothing to redact: kept verbatim


def test_prefilter_with_names_that_prefix_each_other_or_hold_pattern_characters() -> None:
    # The names become one factored pattern: a name that is the start of another, and
    # characters that mean something in a regular expression, must still match exactly.
    names = ["pa", "pan", "pass", "passcode", "a.b", "c+d", "e(f)", "g*", "h?i", "j|k", "l[m]"]
    prefixes = Redactor(frozenset(names))
    for name in names:
        for spelt in _cases(name):
            assert prefixes.mentions(orjson.dumps({"x": 1, spelt: 2})), spelt
            assert prefixes.mentions(f"y=1&{spelt}=2".encode()), spelt
    for other in ["p", "pas", "passc", "passcodes", "axb", "cd", "ccd", "ef", "g", "gg", "hi", "j"]:
        assert not prefixes.mentions(orjson.dumps({other: 1, "k": other})), other
    long = "x" * 5000  # any length a setting allows: no recursion limit on building it
    lengthy = Redactor(frozenset({long, long[:-1] + "y", "pan"}))
    assert lengthy.mentions(orjson.dumps({long.upper(): 1}))
    assert lengthy.mentions(orjson.dumps({"PAN": 1}))
    assert not lengthy.mentions(orjson.dumps({long[:-1]: 1}))


def test_prefilter_with_unusual_field_names_falls_back_to_searching() -> None:
    odd = Redactor(frozenset({"a/b", "straße", "x=y"}))
    assert odd.mentions(orjson.dumps({"A/B": 1}))
    assert odd.mentions('{"STRAẞE": 1}'.encode())  # non-ASCII body and names: always
    assert odd.mentions(b"q=1&x=y=2")
    assert not odd.mentions(b'{"a": "b"}')
    assert not Redactor(frozenset()).mentions(b'{"password": "x"}')


_pieces = st.sampled_from(
    [
        "password",
        "PassWord",
        "token",
        "Tokens",
        "cvv",
        "pan",
        "iban",
        "api_key",
        "api-KEY",
        "to\u212aen",
        "\u017fecret",
        '"',
        "&",
        "=",
        ":",
        " ",
        "\t",
        "\n",
        "'",
        "-",
        "_",
        ",",
        "{",
        "}",
        "[",
        "]",
        "\\u0074",
        "\\",
        "x",
        "é",
    ]
)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(_pieces, max_size=12))
def test_text_redaction_never_changes_what_the_prefilter_passed(parts: list[str]) -> None:
    text = "".join(parts)
    if not R.mentions_text(text.encode()):
        assert R.text(text) == text


_keys = st.sampled_from(
    ["password", "PASSWORD", "Token", "cvc", "pan", "x", "pan_x", "to\u212aen", "Api-Key", "pan-x"]
)
_docs = st.recursive(
    st.none() | st.integers() | _keys,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_keys | st.text(max_size=5), kids),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(doc=_docs, ascii_only=st.booleans())
def test_json_redaction_never_changes_what_the_prefilter_passed(
    doc: object, ascii_only: bool
) -> None:
    data = json.dumps(doc, ensure_ascii=ascii_only).encode()  # \u escapes when ascii_only
    if not R.mentions(data):
        assert R.json(json.loads(data)) == json.loads(data)


def test_uuid7_has_its_version_variant_and_time() -> None:
    now = time.time()
    u = uuid7(now)
    assert u == uuid.UUID(str(u)) and hash(u) == hash(uuid.UUID(str(u)))
    assert u.version == 7 and u.variant == uuid.RFC_4122 and u.int >> 80 == int(now * 1000)
    assert len({uuid7(now) for _ in range(1000)}) == 1000
