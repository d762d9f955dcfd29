"""Building api_logs rows: body description, redaction, sanitising.

Everything here runs before a row is queued, so a row that leaves this module can never
poison a COPY batch: jsonb refuses the ``\\u0000`` escape and lone surrogates, and text
columns refuse NUL, so both are replaced here.

Body storage (documented in sql/001_api_logs.sql and docs/capture.md):

* ``json``   — the parsed JSON value (configured fields redacted);
* ``text``   — a JSON string with the UTF-8 text (fields redacted by pattern);
* ``binary`` — ``{"base64": ..., "sha256": ...}`` of the captured bytes;
* ``empty`` / ``omitted`` — no body, or capture switched off for the route.

Bodies above the cap keep their first ``max_body_bytes`` bytes (a truncated JSON body is
stored as text, since its prefix is not JSON), with ``*_truncated`` set and the original
size in ``*_body_size``.
"""

from __future__ import annotations

import base64
import codecs
import functools
import hashlib
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson

from gateway.capture.scan import plain_json, plain_key, valid
from gateway.randomness import random_bytes

REDACTED = "[REDACTED]"

DEFAULT_REDACT_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-gateway-key",
    }
)
DEFAULT_REDACT_FIELDS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "card_number",
        "cardnumber",
        "cvv",
        "cvc",
        "pan",
        "iban",
    }
)

# Column order of api_logs as written by COPY; rows are tuples in this order.
COLUMNS = (
    "id",
    "created_at",
    "tenant_id",
    "api_key_id",
    "external_system",
    "request_id",
    "route",
    "upstream",
    "method",
    "path",
    "query",
    "request_headers",
    "request_body",
    "request_body_format",
    "request_body_size",
    "request_body_truncated",
    "response_headers",
    "response_body",
    "response_body_format",
    "response_body_size",
    "response_body_truncated",
    "status",
    "duration_ms",
    "upstream_ms",
    "error_code",
    "error_message",
    "client_ip",
    "user_agent",
    "translated",
)
CREATED_AT_INDEX = COLUMNS.index("created_at")
MAX_TEXT_COLUMN = 4096  # chars kept of path, query, user agent, error message
# orjson parses up to 1024 levels of nesting but serialises only 254 (the jsonb codec and
# the journal both serialise), and the redactor recurses once per level: a body with more
# brackets than this is checked before it is kept as JSON, and kept as text if too deep.
JSON_BRACKETS_UNCHECKED = 254


_UNPARSED: Any = object()  # a Body's value not parsed yet (see Body.value)


class Body:
    """A captured body as the row keeps it: ``value`` (the JSON value, text, or the binary
    description), ``format``, the original ``size``, whether it was ``truncated``, and
    ``raw``: the body's own JSON text when it can be stored exactly as received (valid
    JSON, no escapes that jsonb could refuse, nothing to redact), written to the row as is.
    A body taken by the fast path (gateway/capture/scan.py) is only parsed when its value
    is asked for (ID translation, sync rules): most rows never need it."""

    __slots__ = ("_value", "format", "raw", "size", "truncated")

    def __init__(
        self, value: Any, format: str, size: int, truncated: bool, raw: bytes | None = None
    ) -> None:
        self._value = value
        self.format = format
        self.size = size
        self.truncated = truncated
        self.raw = raw

    @property
    def value(self) -> Any:
        value = self._value
        if value is _UNPARSED:
            try:
                value = orjson.loads(self.raw or b"null")
            except orjson.JSONDecodeError:  # tests/unit/test_scan.py says it cannot happen
                value = None
            self._value = value
        return value

    def with_size(self, size: int) -> Body:
        return Body(self._value, self.format, size, self.truncated, self.raw)

    def __repr__(self) -> str:
        return (
            f"Body(format={self.format!r}, size={self.size}, truncated={self.truncated}, "
            f"raw={self.raw is not None})"
        )

    def parsed_from(self, data: bytes) -> Any:
        """The parsed JSON of ``data`` when this body was captured from exactly those bytes,
        complete and unredacted (``raw`` is ``data``), else None: ID translation then
        rewrites that value instead of parsing the body a second time. The row keeps
        ``raw``, so the log still shows what was received."""
        return self.value if self.raw is data else None


EMPTY_BODY = Body(None, "empty", 0, False)


def unparsed_json(data: bytes) -> Body:
    """The Body of complete ``data`` that the fast path found plain JSON: stored exactly as
    received, parsed only if its value is asked for."""
    return Body(_UNPARSED, "json", len(data), False, data)


def omitted(size: int) -> Body:
    return Body(None, "omitted", size, False)


_UUID7_RANDOM = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)  # rand_a and rand_b bits
_UUID7_MARKS = 0x7 << 76 | 0x2 << 62  # version 7, RFC 4122 variant
_new_uuid = uuid.UUID.__new__
_set_slot = object.__setattr__


def uuid7(ts: float | None = None) -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 v7): 48-bit unix milliseconds, then randomness."""
    ms = int((time.time() if ts is None else ts) * 1000)
    rand = int.from_bytes(random_bytes(10), "big")
    # Built as UUID.__init__(int=...) would, without its argument checks (one per row).
    u = _new_uuid(uuid.UUID)
    _set_slot(u, "int", (ms & 0xFFFF_FFFF_FFFF) << 80 | rand & _UUID7_RANDOM | _UUID7_MARKS)
    _set_slot(u, "is_safe", uuid.SafeUUID.unknown)
    return u


def now_utc() -> datetime:
    return datetime.now(UTC)


def clean_text(value: str, limit: int = MAX_TEXT_COLUMN) -> str:
    """Make a string storable in a text/jsonb column: no NUL, no lone surrogates."""
    if len(value) > limit:
        value = value[:limit]
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (e.g. from undecodable header bytes)
            value = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def capture_headers(items: Iterable[tuple[str, str]], redact: frozenset[str]) -> list[list[str]]:
    """Headers as ``[[name, value], ...]`` (repeats kept, sensitive values redacted).
    ``X_Api_Key`` counts as ``x-api-key``: CGI-style servers read both as one header."""
    out = []
    for name, value in items:
        lname = name.lower()
        if lname in redact or ("_" in lname and lname.replace("_", "-") in redact):
            value = REDACTED
        elif not value.isascii() or "\x00" in value:
            value = clean_text(value, 1 << 16)
        out.append([str(name), value])
    return out


def capture_raw_headers(
    raw: Sequence[tuple[bytes, bytes]], names: Sequence[bytes], redact: frozenset[str]
) -> list[list[str]]:
    """:func:`capture_headers` of headers as received (``raw``, decoded as aiohttp decodes
    them: names latin-1, values UTF-8 with undecodable bytes kept as surrogates), given
    their names in lower case (``names``): the same list, without decoding and lowering
    each name for the comparison."""
    folded = _ascii_names(redact)
    if folded is None:  # a non-ASCII redacted name: compared as capture_headers does
        return capture_headers(
            [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in raw],
            redact,
        )
    out = []
    for (name, value), lname in zip(raw, names):  # noqa: B905 (same length)
        # An ASCII name lowers alike as bytes and as text; a non-ASCII one cannot equal
        # an ASCII redacted name either way.
        # (byte values, not b"_": `in` on bytes tries the operand as an int first, and
        # a bytes operand fails that dearly)
        if lname in folded or (_UNDERSCORE in lname and lname.replace(b"_", b"-") in folded):
            text = REDACTED
        elif not value.isascii() or _NUL in value:
            text = clean_text(value.decode("utf-8", "surrogateescape"), 1 << 16)
        else:
            text = value.decode("ascii")
        out.append([name.decode("latin-1"), text])
    return out


_UNDERSCORE = ord("_")
_NUL = 0


@functools.lru_cache(maxsize=64)
def _ascii_names(redact: frozenset[str]) -> frozenset[bytes] | None:
    """Redacted header names as bytes, or None when one is not ASCII."""
    if not all(n.isascii() for n in redact):
        return None
    return frozenset(n.encode() for n in redact)


# Case-folds ASCII, writes "-" as "_" (names compare so: see field_key) and turns the form
# separators into quotes (see Redactor.mentions).
_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ&=-", b'abcdefghijklmnopqrstuvwxyz""_')
# The same for a query string, whose parameters are also split at ";" (some servers do) and
# whose "+" is a space.
_QUERY_FOLD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ&;=-+", b'abcdefghijklmnopqrstuvwxyz"""_ '
)
# The only non-ASCII characters that str.lower() (the JSON walk: KELVIN SIGN) or
# re.IGNORECASE (the text patterns: also LONG S, DOTLESS I, DOTTED CAPITAL I) equate with
# ASCII letters, as UTF-8, with the letter each stands for.
_CONFUSABLES = (
    (b"\xe2\x84\xaa", b"k"),
    (b"\xc5\xbf", b"s"),
    (b"\xc4\xb1", b"i"),
    (b"\xc4\xb0", b"i"),
)
_WORD = b"abcdefghijklmnopqrstuvwxyz0123456789_"


def _text_fold() -> bytes:
    """The text prefilter's table: ASCII letters folded, digits and ``_`` kept, ``-`` as
    ``_`` and every other byte a quote, so a name standing as a whole word (as all the text
    patterns want it) is a quoted piece."""
    table = bytearray(b'"' * 256)
    for c in _WORD:
        table[c] = c
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = c | 0x20
    table[ord("-")] = ord("_")
    return bytes(table)


_TEXT_FOLD = _text_fold()


def _ascii_letters(data: bytes) -> bytes:
    """``data`` with the lookalikes of _CONFUSABLES written as their ASCII letter."""
    for odd, letter in _CONFUSABLES:
        if odd in data:
            data = data.replace(odd, letter)
    return data


def _needles(names: Iterable[str], table: bytes) -> tuple[bytes, ...]:
    """Folded names to look for as substrings, leaving out any that holds a shorter one."""
    folded = sorted({_ascii_letters(n.encode()).translate(table) for n in names}, key=len)
    return tuple(n for i, n in enumerate(folded) if not any(m in n for m in folded[:i]))


_TRIE_DEPTH = 128  # longer names (built by recursion, a level per byte) are listed whole


def _trie_pattern(words: list[bytes]) -> bytes:
    """A regular expression matching exactly ``words``, with shared prefixes factored
    out (``pa(?:n|ssw(?:d|ord))``), so a failed match is given up after a byte or two."""
    long = [re.escape(w) for w in words if len(w) > _TRIE_DEPTH]
    if long:
        short = [w for w in words if len(w) <= _TRIE_DEPTH]
        return b"(?:" + b"|".join(([_trie_pattern(short)] if short else []) + long) + b")"
    trie: dict[int, Any] = {}
    for word in words:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
        node[-1] = {}  # a word ends here

    def pattern(node: dict[int, Any]) -> bytes:
        branches = [re.escape(bytes([b])) + pattern(node[b]) for b in sorted(node) if b >= 0]
        if not branches:
            return b""
        if len(branches) == 1 and -1 not in node:
            return branches[0]
        return b"(?:" + b"|".join(branches) + b")" + (b"?" if -1 in node else b"")

    return pattern(trie)


def field_key(name: str) -> str:
    """A field, parameter or header name as redaction compares it: lower case, with ``-``
    and ``_`` alike (``X-Api-Key``, ``x_api_key`` and ``X_API-KEY`` are one name)."""
    return name.lower().replace("-", "_")


def _name_regex(key: str) -> str:
    """A pattern for a field_key: either separator wherever it has ``_``."""
    return "[-_]".join(re.escape(part) for part in key.split("_"))


class Redactor:
    """Redacts configured names (case-insensitive, ``-`` and ``_`` alike) in JSON keys,
    text bodies (``"name": v``, ``name=v``, ``name: v``) and query parameters."""

    def __init__(self, fields: frozenset[str]) -> None:
        self.fields = fields
        self.keys = frozenset(field_key(f) for f in fields)
        # Names mentions() can compare whole; any other (non-ASCII, odd characters) is
        # looked for as a substring, a name containing another through that one.
        plain = {k for k in self.keys if plain_key(k)}
        # One search for any of them as a whole quoted piece; the alternation is factored
        # into a trie (shared prefixes tried once), which re scans 2-3x faster than
        # splitting the body into pieces and checking each against a set.
        self._quoted = _quoted_search(plain)
        self._needles = _needles(self.keys - plain, _FOLD)
        # Text: the same for whole words (letters, digits and "_" only; others by substring).
        words = {k for k in self.keys if k and not k.encode().translate(None, _WORD)}
        self._words = _quoted_search(words)
        self._text_needles = _needles(self.keys - words, _TEXT_FOLD)
        # The query prefilter folds "+" to a space as the name would be decoded; a name
        # holding "+" (or one only found by substring) is looked for by parsing instead.
        self._query_quick = not self._needles and not any("+" in k for k in self.keys)
        # The fast path: one scan says a JSON body has nothing to redact or escape (None:
        # a name the scan cannot look for; every body then takes the exact path).
        self.plain_json = plain_json(self.keys)
        # Case-insensitive matching of non-ASCII names in non-ASCII bodies: not attempted.
        self._unicode_names = not all(f.isascii() for f in fields)
        alt = "|".join(_name_regex(k) for k in sorted(self.keys)) or r"(?!)"
        # "field": "value" | number | literal, inside text that is not parseable JSON
        self._json_re = re.compile(rf'("(?i:{alt})"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}}\]\s]+)')
        self._form_re = re.compile(rf"((?:^|&)(?i:{alt})=)[^&]*")
        # name: value (to the end of the line: "Authorization: Bearer x") or name=value (to
        # a space or separator), the name not part of a longer word, the value maybe quoted.
        self._pair_re = re.compile(
            rf"((?<![\w-])(?i:{alt})[\"']?[ \t]*(?:(:)|=)[ \t]*)"
            rf"(\"(?:[^\"\\\r\n]|\\.)*\"?|'[^'\r\n]*'?|(?(2)[^\r\n]*|[^\s&;,]*))"
        )

    def _prepared(self, data: bytes) -> bytes | None:
        """``data`` with lookalike letters made ASCII for the prefilters; None when it must
        count as a mention (``\\u`` escapes may spell a key; non-ASCII names and body)."""
        if b"\\" in data and b"\\u" in data:
            return None
        if not data.isascii():
            if self._unicode_names:
                return None
            data = _ascii_letters(data)
        return data

    def mentions(self, data: bytes) -> bool:
        """Whether redaction could change JSON ``data`` (a prefilter: false positives cost
        a needless walk, a miss would leak a field).

        ``json`` redacts keys equal to a name, ignoring case and ``-``/``_``. Each is a
        whole piece between quotes of the folded body: one regular-expression search for
        any quoted name. A key may also be spelt with ``\\u`` escapes, so such bodies
        always count.
        """
        if not self.fields:
            return False
        plain = self._prepared(data)
        if plain is None:
            return True
        low = plain.translate(_FOLD)
        if self._quoted is not None and self._quoted(b'"' + low + b'"') is not None:
            return True
        return any(n in low for n in self._needles)

    def mentions_text(self, data: bytes) -> bool:
        """Whether :meth:`text` could change ``data``: every text pattern wants a name as a
        whole word, which is a quoted piece once each byte but a letter, digit, ``-`` or
        ``_`` is a quote (one search, as :meth:`mentions`)."""
        if not self.fields:
            return False
        plain = self._prepared(data)
        if plain is None:
            return True
        low = plain.translate(_TEXT_FOLD)
        if self._words is not None and self._words(b'"' + low + b'"') is not None:
            return True
        return any(n in low for n in self._text_needles)

    def json(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (REDACTED if field_key(k) in self.keys else self.json(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return value

    def text(self, text: str) -> str:
        text = self._json_re.sub(lambda m: m.group(1) + '"' + REDACTED + '"', text)
        text = self._form_re.sub(lambda m: m.group(1) + REDACTED, text)
        return self._pair_re.sub(_redact_pair, text)

    def query(self, raw: str) -> str:
        """A query string as received with the value of each parameter named like a
        redacted field (its name percent-decoded) replaced by ``[REDACTED]``; everything
        else kept as it was. A query naming none of them costs one search."""
        if not raw or not self.fields:
            return raw
        if self._query_quick and self._quoted is not None:
            text = unquote(raw) if "%" in raw else raw
            if (
                text.isascii()
                and self._quoted(b'"' + text.encode().translate(_QUERY_FOLD) + b'"') is None
            ):
                return raw
        return "&".join(self._query_param(p) for p in raw.split("&"))

    def _query_param(self, piece: str) -> str:
        """One ``&``-separated piece. Some servers also split at ``;``: a redacted name
        after one hides the rest of the piece, which others take for its value."""
        start = 0
        for part in piece.split(";"):
            name, eq, _ = part.partition("=")
            if eq and field_key(unquote_plus(name)) in self.keys:
                head = piece[: start + len(name) + 1]
                return head + REDACTED if len(head) < len(piece) else piece
            start += len(part) + 1
        return piece


def _quoted_search(names: set[str]) -> Callable[[bytes], re.Match[bytes] | None] | None:
    """A search for any of ``names`` (ASCII) between quotes, or None for no names."""
    if not names:
        return None
    return re.compile(b'"' + _trie_pattern(sorted(k.encode() for k in names)) + b'"').search


def _redact_pair(m: re.Match[str]) -> str:
    """A text ``name: value`` / ``name=value`` match with its value redacted (an empty one
    kept; a quoted one keeps its quotes, so redacting twice changes nothing)."""
    value = m.group(3)
    if not value:
        return m.group(0)
    quote = value[0] if value[0] in "\"'" else ""
    return m.group(1) + quote + REDACTED + quote


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    return value


def _decompress(data: bytes, encoding: str, limit: int) -> bytes | None:
    """Decode a gzip/deflate body for the log (not for the client); None if it fails."""
    wbits = {"gzip": 47, "x-gzip": 47, "deflate": 15}.get(encoding.strip().lower())
    if wbits is None:
        return None
    try:
        d = zlib.decompressobj(wbits)
        return d.decompress(data, limit + 1)
    except zlib.error:
        return None


def describe_body(
    data: bytes,
    total_size: int,
    cap: int,
    redactor: Redactor,
    content_type: str = "",
    content_encoding: str = "",
    parse: bool = False,
) -> Body:
    """Turn captured bytes (the first ``len(data)`` of ``total_size``) into a storable Body.
    ``parse``: the body's value will be asked for (ID translation rewrites it), so a plain
    JSON body is parsed now, the parse checking its syntax, rather than checked and then
    parsed (bench/RESULTS-translation.md); the Body is the same either way."""
    if total_size == 0:
        return EMPTY_BODY
    complete = len(data) >= total_size
    if content_encoding and complete:
        plain = _decompress(data, content_encoding, max(cap, 1))
        if plain is not None:
            data, total_size = plain, len(plain)
            complete = len(data) <= cap
    truncated = not complete or len(data) > cap
    if len(data) > cap:
        data = data[:cap]
    if not truncated:
        found = _json_body(data, total_size, content_type, redactor, parse)
        if found is not None:
            return found
    text = _try_text(data, truncated)
    if text is not None:
        if redactor.fields and redactor.mentions_text(data):
            text = redactor.text(text)
        return Body(text, "text", total_size, truncated)
    return Body(
        {"base64": base64.b64encode(data).decode(), "sha256": hashlib.sha256(data).hexdigest()},
        "binary",
        total_size,
        truncated,
    )


def _json_body(
    data: bytes, total_size: int, content_type: str, redactor: Redactor, parse: bool
) -> Body | None:
    """A complete body's Body as JSON (fast path, else exact path), or None: not JSON."""
    if data[:1] in (b"{", b"[") or "json" in content_type:
        fast = _plain_body(data, total_size, redactor, parse)
        if fast is not None:
            return fast
    parsed = _try_json(data, content_type, redactor)
    if parsed is None:
        return None
    value, storable = parsed
    return Body(value, "json", total_size, False, data if storable else None)


def _plain_body(data: bytes, total_size: int, redactor: Redactor, parse: bool) -> Body | None:
    """The fast path (gateway/capture/scan.py): the Body of a plain JSON body, else None.
    With ``parse`` the syntax is checked by parsing (the value kept) rather than by msgspec."""
    scanner = redactor.plain_json
    if scanner is None or not scanner.scanned(data):
        return None
    if parse:
        try:  # the value Body.value would parse from raw
            return Body(orjson.loads(data), "json", total_size, False, data)
        except orjson.JSONDecodeError:  # JSON orjson cannot hold (1e400): as below
            pass
    return Body(_UNPARSED, "json", total_size, False, data) if valid(data) else None


def _try_json(data: bytes, content_type: str, redactor: Redactor) -> tuple[Any, bool] | None:
    """(parsed value with fields redacted, whether ``data`` itself is storable as jsonb)."""
    head = data[:1]
    if head not in (b"{", b"[") and "json" not in content_type:
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if data.count(b"[") + data.count(b"{") > JSON_BRACKETS_UNCHECKED and not _serialisable(value):
        return None  # nested too deeply for jsonb's encoder: stored as text instead
    return _json_value(value, data, redactor)


def _json_value(value: Any, data: bytes, redactor: Redactor) -> tuple[Any, bool]:
    """(``value`` made storable, with fields redacted; whether ``data`` itself is storable)."""
    storable = b"\\u" not in data  # no \u escapes: no NUL, no lone surrogates for jsonb
    if b"\\u0000" in data:
        value = _strip_nul(value)
    if redactor.fields and redactor.mentions(data):
        value = redactor.json(value)
        storable = False
    return value, storable


def describe_serialised(value: Any, data: bytes, cap: int, redactor: Redactor) -> Body:
    """Like :func:`describe_body` for ``data`` the gateway itself wrote with orjson from
    ``value`` (a translated answer): valid JSON of a depth jsonb takes, so not parsed again."""
    if len(data) > cap:
        return describe_body(data, len(data), cap, redactor, "application/json")
    if not data:
        return EMPTY_BODY
    if redactor.plain_json is not None and redactor.plain_json.clean(data):
        return Body(value, "json", len(data), False, data)
    value, storable = _json_value(value, data, redactor)
    return Body(value, "json", len(data), False, data if storable else None)


def _serialisable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:  # orjson: "Recursion limit reached"
        return False
    return True


def _try_text(data: bytes, truncated: bool) -> str | None:
    # A truncated body may end inside a multi-byte character: decode incrementally.
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=not truncated)
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    return text


_CONTAINERS = (dict, list)  # a tuple: `dict | list` would build a union object per call


def stored(value: Any) -> Any:
    """A JSON value as the row keeps it: containers pre-serialised (orjson.Fragment).

    Rows wait in the log queue (and the journal) for up to a flush interval; parsed bodies
    and header lists held there as dicts and lists would be scanned by every full garbage
    collection, which measured at tens of milliseconds under load. A Fragment is one
    untracked object that both the jsonb codec and the journal write out verbatim."""
    if isinstance(value, _CONTAINERS):
        try:
            return orjson.Fragment(orjson.dumps(value))
        except (TypeError, orjson.JSONEncodeError):
            return value  # unrepresentable: COPY refuses it and the writer salvages the row
    return value


def stored_body(body: Body) -> Any:
    return orjson.Fragment(body.raw) if body.raw is not None else stored(body.value)


def row_to_json(row: tuple[Any, ...]) -> list[Any]:
    """A row in a form orjson can write to the journal (UUIDs and datetimes become strings)."""
    return list(row)


def row_from_json(values: list[Any]) -> tuple[Any, ...]:
    """Inverse of row_to_json: restore the datetime asyncpg needs; UUID columns take strings."""
    values[CREATED_AT_INDEX] = datetime.fromisoformat(values[CREATED_AT_INDEX])
    # Journals written before a column was appended to COLUMNS replay with NULL in it.
    values.extend([None] * (len(COLUMNS) - len(values)))
    return tuple(values)
