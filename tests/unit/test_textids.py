"""The C scanner of ID translation (gateway/_idscan.c, gateway.mapping.textids) against the
parsed-value walk it stands in for (gateway.mapping.translate): on every generated body and
set of pointers, either the scanner declines (None: the walk decides) or it finds the same
ids, and the spliced body reads as the walk's rewritten value. It never accepts a body
orjson refuses, nor one a strict route must refuse."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import pointers
from gateway.capture.scan import valid
from gateway.mapping import textids, translate

if TYPE_CHECKING:
    from gateway.mapping.textids import Index

pytestmark = pytest.mark.skipif(
    not textids.AVAILABLE, reason="gateway._idscan is not built (no C compiler at install)"
)

KEYS = ["id", "room_id", "items", "guest", "0", "1", "a", "é"]
POINTERS = [
    "/id",
    "/room_id",
    "/items/*/room_id",
    "/items/*/guest/id",
    "/items/0/id",
    "/guest/id",
    "/guest/*",
    "/items/*",
    "/a/1/room_id",
    "/é/id",
    "/items/*/*/id",
]

ids = st.text(max_size=6) | st.integers(-(2**70), 2**70)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | ids,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def shaped(draw: st.DrawFn, pointer: str, depth: int = 0) -> Any:
    """A value that mostly follows ``pointer`` (so it holds ids there), with noise."""
    segments = pointers.parse_pointer(pointer)

    def at(i: int) -> Any:
        if i == len(segments) or draw(st.integers(0, 9)) == 0:
            return draw(ids | json_values) if draw(st.booleans()) else draw(ids)
        seg = segments[i]
        if seg == "*":
            if draw(st.integers(0, 5)) == 0:
                return {draw(st.sampled_from(KEYS)): at(i + 1)}
            return [at(i + 1) for _ in range(draw(st.integers(0, 3)))]
        if pointers.is_index(seg) and draw(st.booleans()):
            return [at(i + 1) for _ in range(int(seg) + draw(st.integers(0, 2)))]
        noise = draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=2))
        return {**noise, seg: at(i + 1)}

    return at(0)


def mapped(value: str) -> str | None:
    """The test's mapping: some ids map (to text that needs escaping), others do not."""
    if len(value) % 3 == 0:
        return None
    return f'T"{value}\\\n'


def by_walk(body: bytes, trie: pointers.Trie) -> tuple[Any, list[list[str]]] | str:
    """The reference: the rewritten value and the ids per leaf; or why it refuses."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not json"
    slots: list[translate.Slot] = []
    try:
        translate.collect(doc, trie, slots)
    except pointers.NotAnId:
        return "not an id"
    program = textids.program(trie)
    leaves = program.leaves if program else ()
    per_leaf: list[list[str]] = [[] for _ in leaves]
    for container, key, leaf, value in slots:
        per_leaf[leaves.index(leaf)].append(value)
        new = mapped(value)
        if new is not None:
            container[key] = new
    return doc, per_leaf


def find(
    body: bytes,
    trie: pointers.Trie,
    indexes: Callable[[tuple[str, ...]], list[Index]],
    done: dict[str, Any],
) -> textids.Found | None:
    """The scanner's call as gateway.mapping.flow.Flow._text makes it, with the indexes
    from ``indexes(entity types)``; None when the trie has no program or the scanner
    declines the body."""
    compiled = textids.program(trie)
    if compiled is None:
        return None
    found: textids.Found | None = compiled.scanner.scan(body, indexes(compiled.entity_types), done)
    return found


def index(items: dict[str, str] | None = None) -> Index:
    from gateway._idscan import Index  # built: the module is skipped otherwise

    return Index((items or {}).items())


def nothing(entity_types: tuple[str, ...]) -> list[Index]:
    return [index() for _ in entity_types]


def by_text(body: bytes, trie: pointers.Trie) -> tuple[Any, list[list[str]]] | None:
    """The scanner: ids found, looked up in the test's mapping, and spliced in."""
    found = find(body, trie, nothing, {})
    if found is None:
        return None
    values = found.values if found.values is not None else [[] for _ in found.leaves]
    assert found.spans == b"" or found.values is not None  # ids, none mapped: named
    table = {v: new for ids in values for v in ids if (new := mapped(v)) is not None}
    done = {"body:/elsewhere": 2}
    again = find(body, trie, lambda types: [index(table) for _ in types], done)
    assert again is not None and again.spans == found.spans
    counted = {leaf.record: n for leaf, n in zip(again.leaves, again.hits, strict=True) if n}
    assert done == {"body:/elsewhere": 2, **counted}  # replacements counted per field
    everything = all(v in table for ids in values for v in ids)
    assert (again.out is not None) is everything
    assert again.hits == [sum(v in table for v in ids) for ids in values]
    if everything:  # written at once: no lists
        assert again.values is None and again.news is None and again.out is not None
        news = [[mapped(v) for v in ids] for ids in values]
        assert textids.splice(body, again, news) == again.out
        return orjson.loads(again.out), values
    assert again.values == values
    assert again.news == [[mapped(v) for v in ids] for ids in values]
    out = textids.splice(body, again, again.news)
    return orjson.loads(out), values


def encodings(value: Any) -> list[bytes]:
    """The same value as different clients write it."""
    return [
        orjson.dumps(value),
        json.dumps(value, indent=1).encode(),
        json.dumps(value, ensure_ascii=False, separators=(" ,", " : ")).encode(),
    ]


def values_and_tries() -> st.SearchStrategy[tuple[Any, pointers.Trie | None]]:
    """A trie, and a body shaped by one of its pointers (or by none)."""

    def pick(chosen: list[str], strict: bool) -> st.SearchStrategy[Any]:
        try:
            trie = pointers.compile_pointers([(p, "room") for p in chosen], strict=strict)
        except ValueError:  # overlapping pointers: routes.yaml refuses them too
            return st.nothing()
        bodies = st.sampled_from(chosen).flatmap(shaped) | json_values
        if len(chosen) > 1:  # several pointers' shapes merged into one object
            bodies |= st.tuples(*(shaped(p) for p in chosen)).map(_merge)
        return st.tuples(bodies, st.just(trie))

    return st.tuples(
        st.lists(st.sampled_from(POINTERS), min_size=1, max_size=3, unique=True), st.booleans()
    ).flatmap(lambda a: pick(*a))


def _merge(parts: tuple[Any, ...]) -> Any:
    out: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, dict):
            out.update(part)
    return out


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(values_and_tries())
@example(({"items": [{"room_id": "R1"}, {"room_id": 7}, {"room_id": None}]}, None))
def test_the_scanner_finds_what_the_walk_finds(case: tuple[Any, pointers.Trie | None]) -> None:
    value, trie = case
    if trie is None:
        trie = pointers.compile_pointers([("/items/*/room_id", "room")], strict=True)
    try:
        texts = encodings(value)
    except (TypeError, ValueError):  # integers beyond 64 bits: orjson cannot write them
        texts = [json.dumps(value).encode()]
    for body in texts:
        got = by_text(body, trie)
        if got is None:
            continue  # the walk decides; nothing to compare
        reference = by_walk(body, trie)
        assert not isinstance(reference, str), (body, reference)
        assert got[1] == reference[1], body
        assert got[0] == reference[0], body


def test_the_common_shape_takes_the_text_path() -> None:
    trie = pointers.compile_pointers([("/items/*/room_id", "room")], strict=True)
    body = json.dumps(
        {"items": [{"room_id": f"R{i}", "note": 'é \\ "x"'} for i in range(3)]}, indent=2
    ).encode()
    found = find(body, trie, nothing, {})
    assert found is not None and found.values == [["R0", "R1", "R2"]]
    out = textids.splice(body, found, [["a", None, 'q"']])
    assert out == body.replace(b'"R0"', b'"a"').replace(b'"R2"', b'"q\\""')


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"items": [{"room_id": "R\\u0031"}]}', "an escaped id"),
        (b'{"items": [{"room\\u005fid": "R1"}]}', "an escaped key where keys are compared"),
        (b'{"items": [{"room_id": "R1", "room_id": "R2"}]}', "a key twice"),
        (b'{"items": [{"room_id": true}]}', "a strict route's non-id"),
        (b'{"items": {"room_id": "R1"}}', "an object where an array belongs"),
        (b'{"items": [{"room_id": "R1"}]} x', "trailing text"),
        (b'{"items": [{"room_id": "R1"},]}', "a trailing comma"),
        (b'{"items": [{"room_id": "\xed\xa0\x80"}]}', "a surrogate in UTF-8"),
        (b'{"note": "\\ud800", "items": []}', "a lone surrogate escape"),
        (b'{"items": [{"room_id": -0}]}', "-0 (the walk reads 0)"),
        (b'{"items": [{"room_id": 1234567890123456789}]}', "19 digits"),
        (b"[" * 1025 + b"]" * 1025, "deeper than orjson reads (1024 levels)"),
        (b"\xef\xbb\xbf{}", "a byte order mark"),
    ],
)
def test_the_scanner_declines_what_it_cannot_decide(body: bytes, why: str) -> None:
    trie = pointers.compile_pointers([("/items/*/room_id", "room")], strict=True)
    assert find(body, trie, nothing, {}) is None, why


@settings(max_examples=400)
@given(st.binary(max_size=40), st.sampled_from([b'{"items":[{"room_id":', b"[", b'"', b""]))
def test_the_scanner_never_accepts_what_orjson_refuses(tail: bytes, head: bytes) -> None:
    trie = pointers.compile_pointers([("/items/*/room_id", "room")])
    body = head + tail
    if find(body, trie, nothing, {}) is not None:
        orjson.loads(body)  # raises if the scanner took a body that is not JSON
        assert valid(body)  # nor one capture's syntax check refuses


@settings(max_examples=1500)
@given(
    json_values,
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from([0, 1, 2]),  # replace, insert, delete
            st.sampled_from([*b'{}[]:,"\\ -+.eE0123456789tfnulx\x00\x1f\x7f\xc3\xff']),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_what_the_scanner_accepts_or_writes_capture_would_accept(
    value: Any, edits: list[tuple[int, int, int]]
) -> None:
    """Capture leaves out its syntax check (msgspec) for a body the scanner read or wrote
    (CapturePolicy.body's ``checked``): so whatever the scanner accepts, near-JSON included
    (valid bodies with a byte or three changed), msgspec must accept too, and the body the
    scanner writes must be JSON with the same value as the walk's."""
    try:
        body = bytearray(json.dumps(value, ensure_ascii=False).encode())
    except ValueError:
        return
    for at, how, byte in edits:
        at %= len(body) + 1
        if how == 0 and at < len(body):
            body[at] = byte
        elif how == 1:
            body.insert(at, byte)
        elif at < len(body):
            del body[at]
    trie = pointers.compile_pointers([("/items/*/room_id", "room"), ("/id", "room")])
    found = find(bytes(body), trie, nothing, {})
    if found is None:
        return
    assert valid(bytes(body)), bytes(body)
    table = {v: mapped(v) or "x" for ids in (found.values or []) for v in ids}
    again = find(bytes(body), trie, lambda types: [index(table) for _ in types], {})
    assert again is not None and again.out is not None and valid(again.out)


def test_a_trie_mixing_star_and_names_is_left_to_the_walk() -> None:
    trie = pointers.compile_pointers([("/items/*/id", "room"), ("/items/0/x", "room")])
    assert textids.program(trie) is None
    assert find(b'{"items": []}', trie, nothing, {}) is None


def test_splice_refuses_spans_that_do_not_fit() -> None:
    trie = pointers.compile_pointers([("/id", "room")])
    found = find(b'{"id": "abc"}', trie, nothing, {})
    assert found is not None
    with pytest.raises(ValueError):
        textids.splice(b"{}", found, [["x"]])
    with pytest.raises(ValueError):
        textids.splice(b'{"id": "abc"}', found, [[]])


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b", "é", "ROOM-1", "12", "x" * 40, ""]))
        | st.tuples(st.booleans(), st.text(max_size=12)),
        max_size=300,
    )
)
def test_an_index_holds_what_a_dict_holds(ops: list[tuple[bool, str]]) -> None:
    """set/discard in any order (growing, emptying, the deletion's shifts): every key
    answers as a dict would, looked up by the scanner on the bytes of a JSON text."""
    ix, model = index(), {}
    trie = pointers.compile_pointers([("/id", "room")])
    for n, (put, key) in enumerate(ops):
        if put:
            stored = ix.set(key, f"v{n}")
            if stored:
                model[key] = f"v{n}"
            else:  # only a key with no UTF-8 form (a lone surrogate) is refused
                key.encode("utf-8")  # raises
        else:
            assert ix.discard(key) == (model.pop(key, None) is not None)
        assert len(ix) == len(model)
    for key in {k for _, k in ops}:
        assert ix.get(key) == model.get(key)
        if key and key in model:  # the scanner finds it by its bytes
            body = json.dumps({"id": key}, ensure_ascii=False).encode()
            found = find(body, trie, lambda types: [ix], {})
            if found is not None:  # not escaped by json.dumps
                assert found.out == json.dumps({"id": model[key]}).encode()


def test_an_index_refuses_what_is_not_str() -> None:
    ix = index()
    with pytest.raises(TypeError):
        ix.set("a", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ix.discard(b"a")  # type: ignore[arg-type]
    assert ix.set("\ud800", "x") is False and len(ix) == 0
    with pytest.raises(TypeError):  # the scanner takes an Index per leaf, nothing else
        trie = pointers.compile_pointers([("/id", "room")])
        find(b'{"id": "a"}', trie, lambda types: [{}], {})  # type: ignore[list-item]
