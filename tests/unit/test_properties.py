"""Property-based tests (hypothesis) for body capture and ID translation.

Body capture: whatever bytes arrive, with whatever Content-Type/Content-Encoding and cap,
``describe_body`` returns a Body the jsonb codec and the journal can serialise, with no NUL
and no lone surrogate (which PostgreSQL refuses), and never raises — deep nesting included.
(``tests/integration/test_bad_input.py`` stores such bodies in real PostgreSQL.)

ID translation: rewriting a document with a mapping and then with its inverse gives back
the original; ids that are not in the mapping, and everything outside the pointers, are
untouched; the cache-driven walk and the slot walk agree. Compiled strict (the request
pointers of a route refusing unknown ids), every walk refuses exactly the documents a
direct reading of the rule refuses (a value at a pointer that is neither an id nor null,
or one on its way that it cannot enter), and otherwise does what the lenient walk does.
"""

from __future__ import annotations

import copy
import gzip
import time
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import pointers
from gateway.capture.record import DEFAULT_REDACT_FIELDS, REDACTED, Redactor, describe_body
from gateway.mapping import translate
from gateway.mapping.cache import IN, MappingCache

REDACTOR = Redactor(DEFAULT_REDACT_FIELDS | {"passport"})
FORMATS = {"json", "text", "binary", "empty"}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.dictionaries(
            st.sampled_from(["a", "password", "Token", "x\x00", "é"]) | st.text(), kids
        )
    ),
    max_leaves=30,
)


def storable(value: Any) -> bool:
    """What the jsonb codec and the journal need: orjson serialises it (no lone surrogate,
    at most 254 levels) and no string holds NUL (jsonb refuses the \\u0000 escape)."""
    try:
        data = orjson.dumps(value)
    except TypeError:
        return False
    return not _has_nul(orjson.loads(data))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def deep(levels: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * levels + closer * levels


# -- body capture -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=400),
    cap=st.integers(0, 500),
    ctype=st.sampled_from(["", "application/json", "text/plain", "application/x-www-form"]),
    encoding=st.sampled_from(["", "gzip", "deflate", "br", "identity"]),
)
def test_any_bytes_with_any_headers_become_a_storable_body(
    data: bytes, cap: int, ctype: str, encoding: str
) -> None:
    body = describe_body(data, len(data), cap, REDACTOR, ctype, encoding)
    assert body.format in FORMATS
    assert storable(body.value)
    if not data:
        assert body.format == "empty"


@settings(max_examples=200, deadline=None)
@given(value=json_values, encoding=st.sampled_from(["", "gzip", "deflate"]))
def test_any_json_document_is_kept_as_json_and_redacted(value: Any, encoding: str) -> None:
    plain = orjson.dumps(value)
    data = {"": plain, "gzip": gzip.compress(plain), "deflate": zlib.compress(plain)}[encoding]
    body = describe_body(data, len(data), 1 << 20, REDACTOR, "application/json", encoding)
    assert body.format == "json" and body.size == len(plain) and not body.truncated
    assert storable(body.value)
    assert not _holds_secret(body.value)


def _holds_secret(value: Any) -> bool:
    """A redacted field name whose value was not replaced."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k.lower() in REDACTOR.fields and v != REDACTED:
                return True
            if _holds_secret(v):
                return True
    if isinstance(value, list):
        return any(_holds_secret(v) for v in value)
    return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    levels=st.sampled_from([200, 254, 255, 256, 600, 1000, 1023, 1024, 1025, 5000, 100_000]),
    shape=st.sampled_from(["array", "object", "redacted"]),
    truncate=st.booleans(),
)
def test_enormous_nesting_never_raises_and_stays_storable(
    levels: int, shape: str, truncate: bool
) -> None:
    """orjson reads 1024 levels but writes 254, and the redactor recursed once per level:
    a 1000-level body naming ``password`` raised RecursionError out of the proxy (a 500)."""
    if shape == "array":
        data = deep(levels)
    elif shape == "object":
        data = b'{"a":' * levels + b"1" + b"}" * levels
    else:
        data = b'{"password":"p","a":' * levels + b"1" + b"}" * levels
    cap = len(data) // 2 if truncate else len(data) + 1
    body = describe_body(data, len(data), cap, REDACTOR, "application/json")
    assert body.format in {"json", "text"}
    assert storable(body.value)
    assert body.truncated == truncate
    if body.format == "text" and shape == "redacted":
        assert '"password":"p"' not in body.value  # redacted as text instead


# -- ID translation -----------------------------------------------------------------------

FIELDS = [
    ("/id", "reservation"),
    ("/guest/id", "guest"),
    ("/items/*/room_id", "room"),
    ("/rooms/*", "room"),
    ("/by_night/*/room_id", "room"),
    ("/stays/*/*", "room"),
    ("/first/0", "guest"),
]
TRIE = pointers.compile_pointers(FIELDS)
EXTERNAL = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij0123456789-_.:", min_size=1, max_size=12
).map(lambda s: "E" + s)  # never starts like an internal id
SMALL_INTS = range(4)  # integer ids that the cached walk's test maps
SCOPE = (IN, "tenant", "system")
INTERNAL_PREFIX = "00000000-0000-7000-8000-"  # internal ids: UUID-shaped, never external


def _internal(n: int) -> str:
    return f"{INTERNAL_PREFIX}{n:012x}"


@st.composite
def mapping_and_doc(draw: st.DrawFn) -> tuple[dict[tuple[str, str], str], Any]:
    """A bijective mapping (entity type, external) → internal, and a document whose id
    fields hold mapped ids, unmapped ids, integers and things that are no ids at all."""
    externals = draw(st.lists(EXTERNAL, min_size=1, max_size=8, unique=True))
    types = ["reservation", "guest", "room"]
    mapping = {
        (t, e): _internal(i * 3 + j) for i, e in enumerate(externals) for j, t in enumerate(types)
    }
    mapped = st.sampled_from(externals)
    unmapped = EXTERNAL.filter(lambda s: s not in externals)
    ints = st.integers(0, 10**6) | st.sampled_from(SMALL_INTS)
    shapes = st.lists(mapped, max_size=2) | st.dictionaries(mapped, mapped, max_size=1)
    idv = st.one_of(mapped, mapped, unmapped, ints, st.none(), st.booleans(), st.just(""), shapes)
    junk = st.recursive(json_scalars, lambda k: st.lists(k, max_size=3), max_leaves=5)
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["id"] = draw(idv)
    if draw(st.booleans()):
        doc["guest"] = {"id": draw(idv), "name": draw(st.text(max_size=5))}
    if draw(st.booleans()):
        item = st.fixed_dictionaries({"room_id": idv, "n": st.integers()}) | junk
        doc["items"] = draw(st.lists(item, max_size=5))
    if draw(st.booleans()):
        doc["rooms"] = draw(st.lists(idv, max_size=5))
    if draw(st.booleans()):
        night = st.fixed_dictionaries({"room_id": idv})
        doc["by_night"] = draw(st.dictionaries(st.sampled_from(["mon", "tue", "wed"]), night))
    if draw(st.booleans()):
        doc["stays"] = draw(st.lists(st.lists(idv, max_size=3), max_size=3))
    if draw(st.booleans()):
        doc["first"] = draw(st.lists(idv, max_size=3))
    if draw(st.integers(0, 3)) == 0:  # a field of the wrong shape: a strict walk refuses it
        shaky = st.recursive(
            json_scalars | mapped,
            lambda k: (
                st.lists(k, max_size=3)
                | st.dictionaries(st.sampled_from(["id", "room_id", "0", "x"]), k, max_size=2)
            ),
            max_leaves=6,
        )
        doc[draw(st.sampled_from(["id", "guest", "items", "rooms", "by_night", "stays"]))] = draw(
            shaky
        )
    doc["untouched"] = draw(junk)
    return mapping, doc


def rewrite(doc: Any, table: dict[tuple[str, str], str]) -> int:
    slots: list[translate.Slot] = []
    translate.collect(doc, TRIE, slots)
    return translate.apply(slots, table)


def cached_rewrite(doc: Any, table: dict[tuple[str, str], str]) -> list[translate.Slot]:
    """The proxy's path: the cache's tables rewrite in place; misses are left as slots."""
    cache = MappingCache()
    cache.put_many(SCOPE, dict(table), cache.generation)
    rw = translate.CachedRewrite(partial(cache.fresh, SCOPE, time.monotonic()))
    translate.walk(doc, TRIE, rw)
    return rw.rest


def _ids(doc: Any) -> list[tuple[str, str]]:
    slots: list[translate.Slot] = []
    translate.collect(doc, TRIE, slots)
    return [(s[2].entity_type, s[3]) for s in slots]


@settings(max_examples=300, deadline=None)
@given(case=mapping_and_doc())
def test_rewriting_then_inverse_gives_back_the_original(
    case: tuple[dict[tuple[str, str], str], Any],
) -> None:
    mapping, original = case
    # Integer ids are never mapped here: a mapped integer comes back as a string.
    doc = copy.deepcopy(original)
    forward = rewrite(doc, mapping)
    inverse = {(t, internal): ext for (t, ext), internal in mapping.items()}
    assert rewrite(doc, inverse) == forward
    assert doc == original


@settings(max_examples=300, deadline=None)
@given(case=mapping_and_doc())
def test_ids_not_in_the_mapping_and_other_fields_are_untouched(
    case: tuple[dict[tuple[str, str], str], Any],
) -> None:
    mapping, original = case
    doc = copy.deepcopy(original)
    before = _ids(doc)
    n = rewrite(doc, mapping)
    after = _ids(doc)
    assert len(before) == len(after)
    assert n == sum(1 for pair in before if pair in mapping)
    for (t, old), (_, new) in zip(before, after, strict=True):
        assert new == (mapping[(t, old)] if (t, old) in mapping else old)
    assert doc["untouched"] == original["untouched"]
    assert set(doc) == set(original)


@settings(max_examples=300, deadline=None)
@given(case=mapping_and_doc())
def test_the_cached_walk_agrees_with_the_slot_walk(
    case: tuple[dict[tuple[str, str], str], Any],
) -> None:
    mapping, original = case
    for i in SMALL_INTS:  # integer ids are looked up as strings; a mapped one becomes one
        mapping[("room", str(i))] = _internal(1000 + i)
    by_slots, by_cache = copy.deepcopy(original), copy.deepcopy(original)
    rewrite(by_slots, mapping)
    rest = cached_rewrite(by_cache, mapping)
    assert by_cache == by_slots
    assert all((s[2].entity_type, s[3]) not in mapping for s in rest)


# Tries whose pointers lead by a line of fields to one array of records (Trie.chain), the
# shape translate.rewrite follows without the emitter; with the document each applies to.
CHAINS: list[tuple[pointers.Trie, Callable[[Any], Any]]] = [
    (pointers.compile_pointers([("/items/*/room_id", "room")]), lambda d: d),
    (pointers.compile_pointers([("/*/room_id", "room")]), lambda d: d.get("items")),
    (
        pointers.compile_pointers([("/a/items/*/room_id", "room"), ("/a/items/*/n", "room")]),
        lambda d: {"a": d},
    ),
    # The line ends on an object (every value of it), or meets no container on the way.
    (pointers.compile_pointers([("/by_night/*/room_id", "room")]), lambda d: d),
    (pointers.compile_pointers([("/a/items/*/room_id", "room")]), lambda d: {"a": d.get("id")}),
]


@settings(max_examples=300, deadline=None)
@given(
    case=mapping_and_doc(),
    which=st.sampled_from(range(len(CHAINS))),
    strict=st.booleans(),
)
def test_the_direct_rewrite_agrees_with_the_walk(
    case: tuple[dict[tuple[str, str], str], Any], which: int, strict: bool
) -> None:
    mapping, original = case
    for i in SMALL_INTS:
        mapping[("room", str(i))] = _internal(1000 + i)
    trie, shape = CHAINS[which]
    assert trie.chain is not None
    if strict:  # the same pointers, refusing what is no id
        trie = pointers.compile_pointers(
            [(leaf.pointer, leaf.entity_type) for leaf in _leaves(trie)], strict=True
        )
    cache = MappingCache()
    cache.put_many(SCOPE, dict(mapping), cache.generation)
    fresh = partial(cache.fresh, SCOPE, time.monotonic())
    by_walk, direct = shape(copy.deepcopy(original)), shape(copy.deepcopy(original))
    rw = translate.CachedRewrite(fresh)
    done: dict[str, int] = {}
    rest: list[translate.Slot] = []
    walked = _outcome(lambda d: translate.walk(d, trie, rw), by_walk)
    rewritten = _outcome(lambda d: translate.rewrite(d, trie, fresh, done, rest), direct)
    fields = [(leaf.pointer, leaf.entity_type) for leaf in _leaves(trie)]
    refused = _refusals(shape(copy.deepcopy(original)), fields) if strict else set()
    assert walked[0] == rewritten[0] == ("refused" if refused else "ok")
    if refused:
        assert walked[1] in refused and rewritten[1] in refused
        return
    n = rewritten[1]
    assert direct == by_walk
    assert done == rw.done and n == sum(done.values())
    assert [(s[1], s[2], s[3]) for s in rest] == [(s[1], s[2], s[3]) for s in rw.rest]
    inside = _containers(direct)  # the slots point into the document itself, not a copy
    assert all(id(s[0]) in inside for s in rest)


STRICT_TRIE = pointers.compile_pointers(FIELDS, strict=True)


def _refusals(doc: Any, fields: list[tuple[str, str]]) -> set[str]:
    """The pointers at which the strict rule refuses something in ``doc``, read from the
    rule (docs/id-translation.md, "What a strict route refuses") and not from the walk: at
    a pointer, anything but a non-empty string, an integer or null; on its way, anything
    but null, an object, or an array where some pointer continues with ``*`` or an
    index."""
    parsed = [(p, pointers.parse_pointer(p)) for p, _ in fields]
    listy = {
        segs[:k]
        for _, segs in parsed
        for k, seg in enumerate(segs)
        if seg == "*" or pointers.is_index(seg)
    }
    return {p for p, segs in parsed if _refused_on(doc, segs, 0, listy)}


def _refused_on(node: Any, segs: tuple[str, ...], k: int, listy: set[tuple[str, ...]]) -> bool:
    if node is None:
        return False
    if k == len(segs):
        return not ((type(node) is str and node != "") or type(node) is int)
    seg, kids = segs[k], []
    if type(node) is dict:
        kids = list(node.values()) if seg == "*" else [node[seg]] if seg in node else []
    elif type(node) is list and segs[:k] in listy:
        if seg == "*":
            kids = node
        elif pointers.is_index(seg) and int(seg) < len(node):
            kids = [node[int(seg)]]
    else:
        return True
    return any(_refused_on(kid, segs, k + 1, listy) for kid in kids)


def _outcome(run: Callable[[Any], object], doc: Any) -> tuple[str, Any]:
    """``("refused", pointer)`` when ``run(doc)`` raised NotAnId, else ``("ok", result)``."""
    try:
        return "ok", run(doc)
    except pointers.NotAnId as err:
        return "refused", err.name


@settings(max_examples=400, deadline=None)
@given(case=mapping_and_doc())
def test_strict_walks_refuse_exactly_what_the_rule_refuses(
    case: tuple[dict[tuple[str, str], str], Any],
) -> None:
    mapping, original = case
    refused = _refusals(original, FIELDS)

    def slots(doc: Any) -> list[tuple[str, str]]:
        found: list[translate.Slot] = []
        translate.collect(doc, STRICT_TRIE, found)
        return [(s[2].entity_type, s[3]) for s in found]

    def cached(doc: Any) -> Any:
        cache = MappingCache()
        cache.put_many(SCOPE, dict(mapping), cache.generation)
        fresh = partial(cache.fresh, SCOPE, time.monotonic())
        rest: list[translate.Slot] = []
        translate.rewrite(doc, STRICT_TRIE, fresh, {}, rest)
        return doc, [(s[2].entity_type, s[3]) for s in rest]

    for run in (slots, cached):
        kind, got = _outcome(run, copy.deepcopy(original))
        if refused:
            assert kind == "refused" and got in refused
        else:  # nothing to refuse: what the lenient walk does
            assert kind == "ok"
    if not refused:
        assert slots(copy.deepcopy(original)) == _ids(original)
        lenient = copy.deepcopy(original)
        assert cached(copy.deepcopy(original))[1] == [
            (s[2].entity_type, s[3]) for s in cached_rewrite(lenient, mapping)
        ]


def _leaves(trie: pointers.Trie) -> list[pointers.Leaf]:
    out: list[pointers.Leaf] = []
    for sub in trie.values():
        out.extend([sub] if isinstance(sub, pointers.Leaf) else _leaves(sub))
    return out


def _containers(doc: Any) -> set[int]:
    found: set[int] = set()
    todo = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, dict | list):
            found.add(id(node))
            todo.extend(node.values() if isinstance(node, dict) else node)
    return found


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(st.sampled_from(["guest", "room", "x", "g+1", "a b"]), max_size=6),
    values=st.lists(st.text(alphabet="AZaz09-_.~", min_size=1), min_size=6, max_size=6),
    keep=st.lists(st.sampled_from(["", "flag", "q=%20x", "=v", "a&&b"]), max_size=3),
)
def test_query_rewriting_then_inverse_gives_back_the_query(
    names: list[str], values: list[str], keep: list[str]
) -> None:
    params = {"guest": "guest", "room": "room"}
    query = "&".join([f"{n}={v}" for n, v in zip(names, values, strict=False)] + keep)
    found = translate.query_ids(query, params)
    forward = {i: _internal(k) for k, (i, _, _, _) in enumerate(found)}
    rewritten = translate.rewrite_query(query, forward)
    back = {i: v for i, _, _, v in found}
    assert translate.rewrite_query(rewritten, back) == query
    untouched = set(range(len(query.split("&")))) - set(forward)
    for i in untouched:
        assert rewritten.split("&")[i] == query.split("&")[i]
