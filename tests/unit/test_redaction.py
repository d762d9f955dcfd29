"""Redaction wherever a secret travels: query strings, header-like JSON field names, text
bodies, and the rows (and journal) built from them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote_plus

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.exchange import CapturePolicy, Exchange
from gateway.capture.journal import Journal
from gateway.capture.record import (
    COLUMNS,
    DEFAULT_REDACT_FIELDS,
    DEFAULT_REDACT_HEADERS,
    REDACTED,
    Redactor,
    capture_headers,
    field_key,
    now_utc,
    row_from_json,
    uuid7,
)
from gateway.routes import CaptureOptions

CAP = 1 << 16
POLICY = CapturePolicy.build(
    CaptureOptions(redact_fields=frozenset({"guest_passport"})),
    CAP,
    DEFAULT_REDACT_FIELDS,
    DEFAULT_REDACT_HEADERS | {"x-partner-signature"},
)
R = POLICY.redactor
SECRET = "gwk_s3cr3t"


def test_query_values_of_fields_and_header_names_are_redacted_the_rest_kept() -> None:
    cases = {
        f"api_key={SECRET}&x=1": "api_key=[REDACTED]&x=1",
        f"x=1&token={SECRET}&password=hunter2": "x=1&token=[REDACTED]&password=[REDACTED]",
        f"X-Api-Key={SECRET}&b=%20x": "X-Api-Key=[REDACTED]&b=%20x",  # a header's name
        f"AUTHORIZATION=Bearer+{SECRET}": "AUTHORIZATION=[REDACTED]",
        f"x_auth-token={SECRET}": "x_auth-token=[REDACTED]",  # "-" and "_" alike
        f"api%5Fkey={SECRET}&q=a%26b": "api%5Fkey=[REDACTED]&q=a%26b",  # encoded name
        f"%70assword={SECRET}": "%70assword=[REDACTED]",
        f"guest_passport={SECRET}&hotel=7": "guest_passport=[REDACTED]&hotel=7",  # route's
        f"to\u212aen={SECRET}": f"to\u212aen={REDACTED}",  # KELVIN SIGN lowers to k
        f"a=1;token={SECRET};b=2&c=3": "a=1;token=[REDACTED]&c=3",  # ";" split or not
        "token=&x=1": "token=&x=1",  # nothing to hide
        "tokens=1&my_token=2&token": "tokens=1&my_token=2&token",  # other names, no value
        "q=api_key%3Dx&note=token": "q=api_key%3Dx&note=token",  # names inside values
    }
    for raw, want in cases.items():
        assert POLICY.query(raw) == want, raw


def test_a_query_naming_no_secret_is_returned_as_it_came() -> None:
    for raw in ["", "hotel=7&from=2026-01-01T00%3A00%3A00Z&q=a+b", "page=2;size=10", "é=1"]:
        assert R.query(raw) is raw  # the prefilter answered: nothing parsed or rebuilt
    assert Redactor(frozenset()).query(f"token={SECRET}") == f"token={SECRET}"


_qnames = st.sampled_from(
    ["token", "Api-Key", "api%5Fkey", "x_api_key", "pan", "panx", "to\u212aen", "a+b", "q"]
)
_qparts = st.lists(
    st.tuples(_qnames, st.sampled_from(["=", ""]), st.sampled_from(["v", "", "%3D", "a+b"])),
    max_size=5,
)


def _parsed(piece: str) -> str:
    """One ``&`` piece redacted by parsing it, the prefilter's reference."""
    start = 0
    for part in piece.split(";"):
        name = part.partition("=")[0]
        if "=" in part and field_key(unquote_plus(name)) in R.keys:
            head = piece[: start + len(name) + 1]
            return head + REDACTED if head != piece else piece
        start += len(part) + 1
    return piece


@settings(max_examples=300, deadline=None)
@given(parts=_qparts, seps=st.lists(st.sampled_from(["&", ";"]), min_size=5, max_size=5))
def test_query_redaction_matches_parsing_every_parameter(
    parts: list[tuple[str, str, str]], seps: list[str]
) -> None:
    """The prefilter never skips a query that names a field."""
    raw = "".join(seps[i] * (i > 0) + "".join(p) for i, p in enumerate(parts))
    assert R.query(raw) == "&".join(_parsed(piece) for piece in raw.split("&"))


def test_headers_spelt_with_underscores_are_redacted() -> None:
    got = capture_headers(
        [("X_Api_Key", SECRET), ("proxy_authorization", SECRET), ("X_Trace", "t")],
        POLICY.redact_headers,
    )
    assert got == [["X_Api_Key", REDACTED], ["proxy_authorization", REDACTED], ["X_Trace", "t"]]


def test_header_like_names_are_redacted_as_json_fields() -> None:
    doc = {
        "authorization": f"Bearer {SECRET}",
        "req": {"Proxy-Authorization": SECRET, "x_api_key": SECRET, "X-Auth-Token": SECRET},
        "items": [{"cookie": SECRET, "API-KEY": SECRET, "Client-Secret": SECRET}],
        "X-Partner_Signature": SECRET,  # a route's redact_headers, spelt otherwise
        "room": 101,
        "note": "authorization pending",
    }
    data = orjson.dumps(doc)
    body = POLICY.body(True, data, len(data), "application/json", "")
    assert body.format == "json" and body.raw is None
    assert SECRET not in orjson.dumps(body.value).decode()
    assert body.value["room"] == 101 and body.value["note"] == "authorization pending"
    assert body.value["req"]["X-Auth-Token"] == REDACTED


def test_name_value_pairs_in_text_bodies_are_redacted() -> None:
    text = (
        "user: ada\n"
        "password: hunter2\n"
        f"Authorization: Bearer {SECRET}\n"
        f"retry with api_key={SECRET} and x=1, 'token': '{SECRET}'\n"
        f'{{"Client-Secret" : "{SECRET}", "room": 7}}\n'
        "mypassword: stays, the passwords: stay too\n"
    ).encode()
    body = POLICY.body(True, text, len(text), "text/plain", "")
    assert body.format == "text"
    assert SECRET not in body.value and "hunter2" not in body.value
    assert body.value.splitlines() == [
        "user: ada",
        "password: [REDACTED]",
        "Authorization: [REDACTED]",
        "retry with api_key=[REDACTED] and x=1, 'token': '[REDACTED]'",
        '{"Client-Secret" : "[REDACTED]", "room": 7}',
        "mypassword: stays, the passwords: stay too",
    ]


def _journaled(tmp_path: Path) -> bytes:
    """A row built as the proxy builds one, and the journal file holding it."""
    ex = Exchange(
        created_at=now_utc(),
        started=0.0,
        request_id="req-1",
        method="POST",
        path="/api/echo/x",
        query=POLICY.query(f"api_key={SECRET}&x=1"),
        request_headers=capture_headers(
            [("X-Api-Key", SECRET), ("Accept", "*/*")], POLICY.redact_headers
        ),
        client_ip="127.0.0.1",
        user_agent="t",
        status=200,
    )
    data = orjson.dumps({"authorization": f"Bearer {SECRET}", "room": 7})
    ex.request_body = POLICY.body(True, data, len(data), "application/json", "")
    text = b"user: ada\npassword: hunter2\n"
    ex.response_body = POLICY.body(True, text, len(text), "text/plain", "")
    return Journal(tmp_path).write(uuid7(), [ex.to_row(1.0)]).read_bytes()


def test_the_journal_holds_only_redacted_rows(tmp_path: Path) -> None:
    journaled = _journaled(tmp_path)
    assert SECRET.encode() not in journaled and b"hunter2" not in journaled
    for kept in (b"api_key=[REDACTED]&x=1", b'"room":7', b"user: ada", b"*/*"):
        assert kept in journaled
    (replayed,) = orjson.loads(journaled)["rows"]
    assert row_from_json(replayed)[COLUMNS.index("query")] == "api_key=[REDACTED]&x=1"


ODD = Redactor(frozenset({"pa", "pass", "a.b", "c+d", "x-y", "to\u212aen", "\u017fid"}))
_text_pieces = st.sampled_from(
    [
        *("pa", "PASS", "a.b", "A.B", "c+d", "x_y", "X-Y", "token", "\u017fid", "sid", "\u212a"),
        *("«", "é", "-", "_", " ", "\t", "\n", ":", "=", "&", "'", '"', "\\", "v", ","),
    ]
)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(_text_pieces, max_size=10))
def test_text_prefilter_never_passes_what_text_redaction_would_change(parts: list[str]) -> None:
    text = "".join(parts)
    for redactor in (ODD, R):
        if not redactor.mentions_text(text.encode()):
            assert redactor.text(text) == text, redactor.fields


def test_text_prefilter_finds_names_as_whole_words_only() -> None:
    for spelt in ["pass", "PA", "a.B", "C+d", "x_Y", "to\u212aen", "TOKEN", "\u017fid", "SID"]:
        for line in [f"{spelt}: v", f"«{spelt}=v", f"'{spelt}' : v", f"x\n\t{spelt} = v"]:
            assert ODD.mentions_text(line.encode()), line
            assert ODD.text(line).endswith(REDACTED), line
    for line in ["passport: v", "my_pa=v", "pas: v", "a-b: v", "cd=v"]:
        assert not ODD.mentions_text(line.encode()) and ODD.text(line) == line, line
