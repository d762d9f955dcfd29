"""The fast path of body capture (gateway/capture/scan.py) against the exact path it skips:
whenever the scan says a body is plain, the exact path (orjson parse, prefilter, redaction,
depth check) would have stored those very bytes unchanged."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.capture.record import (
    DEFAULT_REDACT_FIELDS,
    DEFAULT_REDACT_HEADERS,
    REDACTED,
    Redactor,
    _try_json,
    describe_body,
    describe_serialised,
    stored_body,
)
from gateway.capture.scan import DEEP_BRACKETS, MAX_BYTES, plain_json

R = Redactor(DEFAULT_REDACT_FIELDS | DEFAULT_REDACT_HEADERS | {"guest_passport"})
CAP = 1 << 16
NAMES = ["password", "Pass-Word", "API_KEY", "api-key", "x_Api_key", "guest-passport", "cvv"]
OTHER = ["id", "passwords", "my_token", "tokenize", "pan_id", "guest", "note", "Σ"]


OUT_OF_DOUBLE = re.compile(rb"[0-9]e[-+]?[0-9]{3}", re.IGNORECASE)


def exact(data: bytes) -> tuple[Any, bool] | None:
    """The exact path's verdict: (value, storable as received) or None (not JSON)."""
    return _try_json(data, "application/json", R)


def same_when_parsed(data: bytes) -> None:
    """describe_body(parse=True) (a translated route's request: parsed by orjson instead of
    checked by msgspec) gives the Body the default gives, its value parsed already."""
    lazy = describe_body(data, len(data), CAP, R, "application/json")
    eager = describe_body(data, len(data), CAP, R, "application/json", parse=True)
    assert (eager.format, eager.size, eager.truncated) == (lazy.format, lazy.size, lazy.truncated)
    assert eager.raw is lazy.raw or eager.raw == lazy.raw
    assert orjson.dumps(eager.value) == orjson.dumps(lazy.value)


def check(data: bytes) -> None:
    assert R.plain_json is not None
    same_when_parsed(data)
    if R.plain_json(data):
        verdict = exact(data)
        if verdict is None and OUT_OF_DOUBLE.search(data):
            # 1e400: infinity to orjson (the exact path keeps it as text), a numeric to
            # jsonb (the fast path stores it as JSON); its value is not needed to store it
            assert describe_body(data, len(data), CAP, R, "application/json").value is None
            return
        assert verdict is not None, data  # the exact path also reads it as JSON
        value, storable = verdict
        assert storable, data  # ... stores it as received, nothing redacted
        assert value == orjson.loads(data)
        body = describe_body(data, len(data), CAP, R, "application/json")
        assert body.format == "json" and body.raw is data
        assert body.value == value  # parsed on demand, the same value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES + OTHER) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from([b"", b" ", b"\n", b"\t"]))
@example({"id": 1, "nested": {"Pass-Word": "x"}}, b"")
@example({"note": "a\u0000b"}, b"")
@example({"a": "\U0001f600"}, b"")
def test_whatever_the_scan_passes_the_exact_path_stores_unchanged(value: Any, pad: bytes) -> None:
    check(pad + orjson.dumps(value) + pad)
    check(pad + orjson.dumps(value, option=orjson.OPT_INDENT_2) + pad)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"{", b"[", b'{"a":', b'["']))
@example(b'"a":1,}', b"{")
@example(b'"a":01}', b"{")
@example(b'"a":"\\x"}', b"{")
@example(b"1]\x0c", b"[")  # a form feed is not JSON whitespace
@example(b'"a":NaN}', b"{")
@example(b'"a":1e999}', b"{")
@example(b"1] ]", b"[")
@example(b"123456789012345678901234567890]", b"[")
@example(b"1e400]", b"[")
@example(b"1E-400, 2]", b"[")
@example(b"1e1001]", b"[")
def test_broken_bodies_are_never_passed_as_plain(tail: bytes, head: bytes) -> None:
    check(head + tail)


def test_a_body_to_translate_is_parsed_once_by_its_capture() -> None:
    data = orjson.dumps({"items": [{"room_id": "ROOM-1"}], "n": 1.5})
    body = describe_body(data, len(data), CAP, R, "application/json", parse=True)
    assert body.raw is data and body.format == "json"
    assert body._value == orjson.loads(data)  # parsed already
    assert body.parsed_from(data) is body._value  # what translation rewrites
    far = b'{"a": 1e400, "items": []}'  # JSON orjson cannot hold: checked, kept, not parsed
    body = describe_body(far, len(far), CAP, R, "application/json", parse=True)
    assert body.raw is far and body.format == "json" and body.value is None


def test_a_plain_answer_is_stored_as_received_and_parsed_only_when_asked() -> None:
    data = orjson.dumps({"id": "r-1", "guest": {"name": "Ada"}, "rooms": [1, 2]})
    body = describe_body(data, len(data), CAP, R, "application/json")
    assert body.raw is data and body.format == "json"
    assert body._value is not body.value or body.value == orjson.loads(data)
    assert stored_body(body) is not None
    assert body.parsed_from(data) == orjson.loads(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"guest": {"PASSWORD": "hunter2"}}',
        b'{"x-api-key": "k"}',
        b'[{"Guest_Passport": "P123"}]',
        b'{"card_number": 4111111111111111}',
        b'{"pass\\u0077ord": "hunter2"}',  # an escape spelling a name
    ],
)
def test_bodies_naming_a_redacted_field_take_the_exact_path(data: bytes) -> None:
    assert R.plain_json is not None and not R.plain_json(data)
    body = describe_body(data, len(data), CAP, R, "application/json")
    assert body.raw is None  # re-serialised with the field redacted
    assert REDACTED in orjson.dumps(body.value).decode()


def test_non_ascii_escaped_deep_large_and_far_exponent_bodies_take_the_exact_path() -> None:
    assert R.plain_json is not None
    assert not R.plain_json(b"[1e1001]")  # beyond PostgreSQL 15's numeric exponent
    assert not R.plain_json(b"[2.5E-1000, 1]")
    assert R.plain_json(b'["9e1234-ab", 1e300]')  # hex in a string, a 3-digit exponent
    big = b"[" + b"1," * (MAX_BYTES // 2) + b"1]"
    assert not R.plain_json(big)
    assert not R.plain_json('{"name": "Zoë"}'.encode())
    assert not R.plain_json(b'{"a": "\\u00e9"}')
    deep = b"[" * DEEP_BRACKETS + b"]" * DEEP_BRACKETS
    assert not R.plain_json(deep)
    assert R.plain_json(b"[" * (DEEP_BRACKETS - 1) + b"]" * (DEEP_BRACKETS - 1))
    body = describe_body(deep, len(deep), CAP, R, "application/json")
    assert body.format == "text"  # too deep for orjson to write: kept as text, as before


def test_the_gateways_own_json_is_scanned_not_parsed() -> None:
    value = {"id": "r-1"}
    data = orjson.dumps(value)
    body = describe_serialised(value, data, CAP, R)
    assert body.raw is data and body.value is value
    secret = {"token": "t"}
    body = describe_serialised(secret, orjson.dumps(secret), CAP, R)
    assert body.raw is None and body.value == {"token": REDACTED}


def test_names_the_scan_cannot_look_for_leave_every_body_to_the_exact_path() -> None:
    assert plain_json(frozenset({"a/b"})) is None
    odd = Redactor(frozenset({"a/b"}))
    data = b'{"a/b": 1}'
    body = describe_body(data, len(data), CAP, odd, "application/json")
    assert body.value == {"a/b": REDACTED}
