"""Pure parts of ID translation: pointers, the one-pass body walk, path/query rewriting,
the cache's bounds and invalidation, bulk import parsing."""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import metrics, pointers
from gateway.mapping import importing, textids, translate
from gateway.mapping.cache import IN, OUT, CacheLimits, MappingCache
from gateway.mapping.listener import apply_notification


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("/guest_id", ("guest_id",)),
        ("/items/*/room_id", ("items", "*", "room_id")),
        ("/a~1b/~0c/0", ("a/b", "~c", "0")),
    ],
)
def test_pointers_parse(text: str, segments: tuple[str, ...]) -> None:
    assert pointers.parse_pointer(text) == segments


@pytest.mark.parametrize("bad", ["guest_id", "", "/a//b", "/a~2", "/" + "/x" * 40])
def test_bad_pointers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        pointers.parse_pointer(bad)


def test_overlapping_pointers_are_refused() -> None:
    with pytest.raises(ValueError, match="inside"):
        pointers.compile_pointers([("/guest", "guest"), ("/guest/id", "guest")])
    with pytest.raises(ValueError, match="overlaps"):
        pointers.compile_pointers([("/g", "guest"), ("/g", "room")])


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ([("/rooms/0", "room"), ("/rooms/*", "room")], ("/rooms/*", "/rooms/0")),
        ([("/a/*/id", "room"), ("/a/b/*", "room")], ("/a/*/id", "/a/b/*")),
        ([("/guest/id", "guest"), ("/*/id", "guest")], ("/*/id", "/guest/id")),
        ([("/s/*/*", "room"), ("/s/0/x", "rate")], ("/s/*/*", "/s/0/x")),
    ],
)
def test_pointers_that_can_name_the_same_id_are_refused(
    fields: list[tuple[str, str]], named: tuple[str, str]
) -> None:
    # Both would rewrite that id: the second from the first one's result.
    with pytest.raises(ValueError, match="can name the same id") as err:
        pointers.compile_pointers(fields)
    assert all(repr(p) in str(err.value) for p in named)


def test_an_index_has_no_leading_zero() -> None:
    # RFC 6901: "00" is an object's key, never an array index; read as index 0 it let
    # /rooms/0 and /rooms/00 both rewrite the first room.
    trie = pointers.compile_pointers([("/rooms/0", "room"), ("/rooms/00", "room")])

    def found(doc: object) -> list[tuple[object, str]]:
        slots: list[translate.Slot] = []
        translate.collect(doc, trie, slots)
        return [(s[1], s[3]) for s in slots]

    assert found({"rooms": ["R1", "R2"]}) == [(0, "R1")]
    assert sorted(found({"rooms": {"0": "R1", "00": "R2"}})) == [("0", "R1"), ("00", "R2")]


@pytest.mark.parametrize(
    "fields",
    [
        [("/items/*/room_id", "room"), ("/items/0/rate_id", "rate")],  # other fields
        [("/guest", "guest"), ("/*/id", "guest")],  # an id is no object
        [("/a/*", "room"), ("/b/*", "room")],
    ],
)
def test_pointers_that_never_meet_are_accepted(fields: list[tuple[str, str]]) -> None:
    assert pointers.compile_pointers(fields)


def rewrite(doc: object, fields: list[tuple[str, str]], table: dict[tuple[str, str], str]) -> int:
    slots: list[translate.Slot] = []
    translate.collect(doc, pointers.compile_pointers(fields), slots)
    return translate.apply(slots, table)


def test_nested_arrays_objects_and_wildcards_in_one_pass() -> None:
    doc = {
        "guest_id": "G-1",
        "items": [
            {"room_id": "101"},
            {"room_id": 102},
            {"other": "101"},
            "junk",
            {"room_id": None},
        ],
        "by_night": {"mon": {"room_id": "101"}, "tue": {"room_id": "999"}},
        "stays": [["101", "102"], ["102"]],
        "flag": True,
    }
    table = {("guest", "G-1"): "g", ("room", "101"): "r1", ("room", "102"): "r2"}
    fields = [
        ("/guest_id", "guest"),
        ("/items/*/room_id", "room"),
        ("/by_night/*/room_id", "room"),
        ("/stays/*/*", "room"),
        ("/flag", "room"),
        ("/missing/x", "room"),
    ]
    assert rewrite(doc, fields, table) == 7
    assert doc == {
        "guest_id": "g",
        "items": [
            {"room_id": "r1"},
            {"room_id": "r2"},
            {"other": "101"},
            "junk",
            {"room_id": None},
        ],
        "by_night": {"mon": {"room_id": "r1"}, "tue": {"room_id": "999"}},
        "stays": [["r1", "r2"], ["r2"]],
        "flag": True,  # booleans are never ids
    }


def test_numeric_segment_indexes_arrays_and_value_at() -> None:
    doc = {"items": [{"id": "a"}, {"id": "b"}]}
    assert rewrite(doc, [("/items/1/id", "x")], {("x", "b"): "B", ("x", "a"): "A"}) == 1
    assert doc == {"items": [{"id": "a"}, {"id": "B"}]}
    assert translate.value_at(doc, ("items", "0", "id")) == "a"
    assert translate.value_at(doc, ("items", "5", "id")) is None
    assert translate.value_at("scalar", ("x",)) is None


def test_path_parameters_are_decoded_and_rewritten_in_place() -> None:
    regex = re.compile(r"/r/(?P<rid>[^/]+)/rooms/(?P<room>[^/]+)")
    raw = "/r/R%2F1/rooms/101"
    m = regex.fullmatch(raw)
    assert m is not None
    found = translate.path_ids(m, {"rid": "reservation", "room": "room"})
    assert [(f[0], f[2]) for f in found] == [("rid", "R/1"), ("room", "101")]
    out = translate.rewrite_path(raw, [(found[0][3], "uuid-1"), (found[1][3], "uuid 2")])
    assert out == "/r/uuid-1/rooms/uuid%202"


def test_query_values_are_rewritten_and_other_bytes_kept() -> None:
    raw = "a=%41&guest=G%2B1&guest=G-2&flag&guest="
    found = translate.query_ids(raw, {"guest": "guest"})
    assert [(i, v) for i, _, _, v in found] == [(1, "G+1"), (2, "G-2")]
    out = translate.rewrite_query(raw, {1: "u1", 2: "u&2"})
    assert out == "a=%41&guest=u1&guest=u%262&flag&guest="
    assert translate.query_ids("", {"guest": "guest"}) == []


def test_cache_bounds_ttl_negative_entries_and_invalidation() -> None:
    cache = MappingCache(CacheLimits(max_entries=3, max_bytes=10**6, ttl=60, negative_ttl=0))
    scope = (IN, "t", "s")
    pairs = [("room", str(i)) for i in range(4)]
    cache.put_many(scope, {p: f"u{i}" for i, p in enumerate(pairs)}, cache.generation)
    assert len(cache) == 3  # the oldest was evicted
    found, missing = cache.get_many(scope, pairs)
    assert missing == [pairs[0]] and found[pairs[3]] == "u3"
    neg = ("room", "none")
    cache.put_many(scope, {neg: None}, cache.generation)
    assert cache.get_many(scope, [neg])[1] == [neg]  # negative TTL 0: already stale
    expired = _evictions("expired")
    cache.put_many(scope, {neg: None}, cache.generation)  # looked up again: the stale one goes
    assert _evictions("expired") == expired + 1 and len(cache) == 3
    cache.invalidate_rows([("t", "s", "room", "u9", "3")])
    assert cache.get_many(scope, [pairs[3]])[1] == [pairs[3]]
    cache.put_many((OUT, "t2", "s"), {("room", "u"): "x"}, cache.generation)
    cache.invalidate_tenants(["t"])
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_changes_to_mappings_never_cached_leave_nothing_behind() -> None:
    # Every change is announced to every process: a bulk import for tenants and systems a
    # process never translated for must not grow its cache's bookkeeping.
    cache = MappingCache()
    generation = cache.generation
    cache.invalidate_rows([(f"t{i}", "s", f"type{i % 7}", f"u{i}", f"e{i}") for i in range(500)])
    assert cache._scopes == {} and len(cache) == 0 and cache.generation == generation + 1


def _evictions(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "gateway_mapping_cache_evictions_total", {"reason": reason}
    )
    return value or 0.0


def test_cache_byte_bound_and_stale_generation() -> None:
    cache = MappingCache(CacheLimits(max_entries=1000, max_bytes=1000))
    scope = (IN, "t", "s")
    cache.put_many(scope, {("e", str(i)): "x" * 100 for i in range(10)}, 0)
    assert cache.bytes <= 1000 and len(cache) < 10
    old = cache.generation
    cache.invalidate_rows([])
    cache.put_many(scope, {("e", "late"): "x"}, old)  # read before the change: not kept
    assert cache.get_many(scope, [("e", "late")])[1]


def test_notifications_drop_what_they_name() -> None:
    cache = MappingCache()
    a, b = (IN, "t1", "s"), (OUT, "t2", "s")
    cache.put_many(a, {("room", "101"): "u1"}, cache.generation)
    cache.put_many(b, {("room", "u"): "X"}, cache.generation)
    apply_notification(cache, '{"rows": [["t1", "s", "room", "u1", "101"]]}')
    assert len(cache) == 1 and cache.get_many(b, [("room", "u")])[0]
    apply_notification(cache, '{"tenants": ["t2"]}')
    assert len(cache) == 0
    cache.put_many(a, {("room", "101"): "u1"}, cache.generation)
    apply_notification(cache, "garbage")
    assert len(cache) == 0
    cache.put_many(a, {("room", "101"): "u1"}, cache.generation)
    apply_notification(cache, '{"rows": [["t1", "s"]]}')  # not what the trigger sends
    assert len(cache) == 0


def test_fresh_view_holds_found_entries_until_they_expire() -> None:
    cache = MappingCache(CacheLimits(max_entries=4, max_bytes=10**6, ttl=10, negative_ttl=5))
    scope = (IN, "t", "s")
    now = time.monotonic()
    cache.put_many(scope, {("room", "a"): "ua", ("room", "none"): None}, cache.generation)
    cache.put_many(scope, {("room", "b"): "ub"}, cache.generation)
    assert dict(cache.fresh(scope, now, "room")) == {"a": "ua", "b": "ub"}  # not "none"
    assert cache.fresh(scope, now, "guest") == {} and cache.fresh((IN, "x", "s"), now, "room") == {}
    cache.put_many(scope, {("room", "a"): "ua2"}, cache.generation)  # refreshed: now last
    assert list(cache.fresh(scope, now, "room").items()) == [("b", "ub"), ("a", "ua2")]
    entries = cache._scopes[scope]["room"].entries
    b_expiry, a_expiry = entries["b"][1], entries["a"][1]  # a was put after b
    view = cache.fresh(scope, b_expiry, "room")  # an expiry is the first stale instant
    assert "b" not in view and ("a" in view) == (a_expiry > b_expiry)
    assert cache.fresh(scope, a_expiry, "room") == {}
    assert len(cache) == 3  # pruned from the view only; get_many checks each expiry
    cache.put_many(scope, {("room", "c"): "uc", ("room", "d"): "ud"}, cache.generation)
    cache.invalidate_rows([("t", "s", "room", "uc", "c")])
    assert dict(cache.fresh(scope, time.monotonic(), "room")) == {"d": "ud"}
    cache.put_many(scope, {("room", "d"): None}, cache.generation)  # now known unmapped
    assert cache.fresh(scope, time.monotonic(), "room") == {}
    cache.put_many(scope, {("room", str(i)): f"u{i}" for i in range(6)}, cache.generation)
    assert list(cache.fresh(scope, time.monotonic(), "room")) == ["2", "3", "4", "5"]  # bound


def test_cached_rewrite_whole_arrays_and_one_by_one() -> None:
    cache = MappingCache()
    scope = (IN, "t", "s")
    cache.put_many(scope, {("room", f"R{i}"): f"u{i}" for i in range(3)}, cache.generation)
    cache.put_many(scope, {("room", "7"): "u7", ("room", ""): "never"}, cache.generation)
    trie = pointers.compile_pointers([("/items/*/room_id", "room")])

    def run(items: list[object]) -> tuple[list[object], list[str], dict[str, int]]:
        rw = translate.CachedRewrite(partial(cache.fresh, scope, time.monotonic()))
        translate.walk({"items": items}, trie, rw)
        return items, [slot[3] for slot in rw.rest], rw.done

    all_mapped = [{"room_id": "R0"}, {"room_id": "R2", "n": 1}]
    assert run(all_mapped) == (
        [{"room_id": "u0"}, {"room_id": "u2", "n": 1}],
        [],
        {"body:/items/*/room_id": 2},
    )
    mixed = [{"room_id": "R1"}, {"room_id": 7}, {"room_id": "X"}, {"n": 1}, "R0", ["R0"]]
    mixed += [{"room_id": ["R0"]}, {"room_id": ""}, {"room_id": None}, {"room_id": True}]
    before = copy.deepcopy(mixed)
    items, rest, done = run(mixed)
    assert items[:3] == [{"room_id": "u1"}, {"room_id": "u7"}, {"room_id": "X"}]
    assert items[3:] == before[3:] and rest == ["X"] and done == {"body:/items/*/room_id": 2}
    assert run([{"room_id": ""}]) == ([{"room_id": ""}], [], {})  # an empty id is no id
    assert run([]) == ([], [], {})


def test_lines_of_fields_to_an_array_are_followed_directly() -> None:
    trie = pointers.compile_pointers([("/a/b/*/id", "room")])
    assert trie.chain is not None and trie.chain[0] == ("a", "b")
    assert pointers.compile_pointers([("/a/0/*/id", "room")]).chain is None  # 0 may index
    assert pointers.compile_pointers([("/a/*/*/id", "room")]).chain is None

    def ids(doc: object) -> list[tuple[object, str]]:
        slots: list[translate.Slot] = []
        translate.collect(doc, trie, slots)
        return [(s[1], s[3]) for s in slots]

    assert ids({"a": {"b": [{"id": "x"}, {"id": 5}, {}, "y"]}}) == [("id", "x"), ("id", "5")]
    assert ids({"a": {"b": {"k1": {"id": "x"}, "k2": {"id": "y"}}}}) == [("id", "x"), ("id", "y")]
    assert ids({"a": [{"b": [{"id": "x"}]}]}) == []  # a list where an object must be
    assert ids({"a": {"c": []}}) == [] and ids([]) == [] and ids({"a": None}) == []


def test_only_ascii_digits_index_arrays() -> None:
    slots: list[translate.Slot] = []
    translate.collect({"a": [{"id": "x"}]}, pointers.compile_pointers([("/a/²/id", "r")]), slots)
    assert slots == []  # "²".isdigit() is true, int("²") raises
    translate.collect({"a": [{"id": "x"}]}, pointers.compile_pointers([("/a/0/id", "r")]), slots)
    assert [s[3] for s in slots] == ["x"]
    assert translate.value_at({"a": ["v"]}, ("a", "²")) is None


def test_import_parsing_and_duplicates() -> None:
    u1, u2 = str(uuid.uuid4()), str(uuid.uuid4())
    csv_text = (
        "external_id,entity_type,internal_id,external_system\n"
        f"R-1,reservation,{u1},be\n"
        f"R-1,reservation,{u1},be\n"
        f"R-1,reservation,{u2},be\n"
        f"R-2,Bad,{u2},be\n"
        "R-3,reservation\n"
    )
    parsed = importing.parse(csv_text.encode(), "text/csv")
    assert [e["line"] for e in parsed.errors] == [5, 6]
    settled = importing.settle_duplicates(parsed.rows)
    assert len(settled.unique) == 1 and settled.repeats == 1
    assert settled.conflicts[0]["line"] == 4 and settled.conflicts[0]["conflicting"]["line"] == 2
    jsonl = (
        b'{"entity_type": "room", "internal_id": "%s", "external_system": "be", '
        b'"external_id": "1", "direction": "inbound"}\n\nnot json\n[1]\n' % u1.encode()
    )
    parsed = importing.parse(jsonl, "jsonl")
    assert parsed.rows[0].direction == "inbound"
    assert [e["line"] for e in parsed.errors] == [3, 4]
    with pytest.raises(importing.ImportFormatError):
        importing.parse(b"a,b\n", "text/csv")
    with pytest.raises(importing.ImportFormatError):
        importing.parse(b"\xff", "text/csv")


def test_flat_record_nodes_are_marked_when_compiled() -> None:
    trie = pointers.compile_pointers(
        [("/items/*/room_id", "room"), ("/items/*/rate_id", "rate"), ("/guest/*/id", "guest")]
    )
    items = trie["items"]
    assert isinstance(items, pointers.Trie) and items.records is None  # holds '*'
    star = items["*"]
    assert isinstance(star, pointers.Trie)
    assert [(k, leaf.pointer) for k, leaf in star.records or []] == [
        ("room_id", "/items/*/room_id"),
        ("rate_id", "/items/*/rate_id"),
    ]
    assert trie.records is None  # 'items' and 'guest' lead deeper
    rooms = {"items": [{"room_id": "101"}, {"rate_id": 7, "room_id": 102}, "x", {"a": 1}]}
    slots: list[translate.Slot] = []
    translate.collect(rooms, trie, slots)
    assert [(s[2].entity_type, s[3]) for s in slots] == [
        ("room", "101"),
        ("room", "102"),
        ("rate", "7"),
    ]


# -- strict tries: values that are no id ------------------------------------------------

NO_IDS = [
    pytest.param(["101"], "an array", id="array"),
    pytest.param({"$ne": None}, "an object", id="object"),
    pytest.param(True, "true", id="true"),
    pytest.param(False, "false", id="false"),
    pytest.param(1.5, "a fractional number", id="float"),
    pytest.param("", "an empty string", id="empty"),
]
# Each pointer shape the walk treats apart: a named field, every element of an array (a
# leaf under '*'), a field of every record (the fast path), an index.
SHAPES: list[tuple[str, Callable[[object], object]]] = [
    ("/guest_id", lambda v: {"guest_id": v}),
    ("/rooms/*", lambda v: {"rooms": ["101", v]}),
    ("/items/*/room_id", lambda v: {"items": [{"room_id": "101"}, {"room_id": v}]}),
    ("/first/0", lambda v: {"first": [v]}),
]
TABLE: dict[tuple[str, str], str | None] = {("room", "101"): "u101", ("guest", "101"): "g101"}


def _run_both(doc: object, trie: pointers.Trie) -> tuple[list[str], list[str]]:
    """The ids the slot walk finds, and those the proxy's cached rewrite leaves unmapped
    (it maps only TABLE), each on its own copy of ``doc``."""
    slots: list[translate.Slot] = []
    translate.collect(copy.deepcopy(doc), trie, slots)
    cache = MappingCache()
    scope = (IN, "t", "s")
    cache.put_many(scope, TABLE, cache.generation)
    rest: list[translate.Slot] = []
    fresh = partial(cache.fresh, scope, time.monotonic())
    translate.rewrite(copy.deepcopy(doc), trie, fresh, {}, rest)
    return [s[3] for s in slots], [s[3] for s in rest]


@pytest.mark.parametrize(("pointer", "make"), SHAPES)
@pytest.mark.parametrize(("value", "found"), NO_IDS)
def test_a_strict_trie_refuses_what_is_no_id_at_a_pointer(
    pointer: str, make: Callable[[object], object], value: object, found: str
) -> None:
    doc = make(value)
    entity_type = "guest" if "guest" in pointer else "room"
    strict = pointers.compile_pointers([(pointer, entity_type)], strict=True)
    with pytest.raises(pointers.NotAnId) as by_slots:
        translate.collect(copy.deepcopy(doc), strict, [])
    with pytest.raises(pointers.NotAnId) as by_cache:
        _run_both(doc, strict)
    for err in (by_slots.value, by_cache.value):
        assert (err.name, err.entity_type, err.found) == (pointer, entity_type, found)
        assert err.problem.startswith(f"holds {found}, not a {entity_type} id")
    # A lenient trie skips the value: forwarded as it is, nothing looked up for it.
    lenient = pointers.compile_pointers([(pointer, entity_type)])
    ids, unmapped = _run_both(doc, lenient)
    assert "" not in ids and all(isinstance(i, str) for i in ids) and unmapped == []


@pytest.mark.parametrize(("pointer", "make"), SHAPES)
@pytest.mark.parametrize("strict", [True, False])
def test_null_at_a_pointer_is_no_reference_and_passes(
    pointer: str, make: Callable[[object], object], strict: bool
) -> None:
    doc = make(None)
    trie = pointers.compile_pointers([(pointer, "room")], strict=strict)
    before = copy.deepcopy(doc)
    ids, unmapped = _run_both(doc, trie)
    assert None not in ids and unmapped == [] and doc == before


@pytest.mark.parametrize(
    ("pointer", "doc", "at", "found"),
    [
        ("/items/*/room_id", {"items": "101"}, "'/items'", "a string"),  # no array
        ("/items/*/room_id", {"items": 101}, "'/items'", "an integer"),
        ("/items/*/room_id", {"items": True}, "'/items'", "true"),
        ("/items/*/room_id", {"items": ["101"]}, "'/items/*'", "a string"),  # no record
        ("/items/*/room_id", {"items": [{"room_id": None}, ["101"]]}, "'/items/*'", "an array"),
        ("/items/*/room_id", {"items": {"a": "101"}}, "'/items/*'", "a string"),
        ("/items/*/room_id", ["101"], "the top level", "an array"),
        ("/a/items/*/room_id", {"a": "x"}, "'/a'", "a string"),  # on a line of fields
        ("/a/items/*/room_id", {"a": {"items": 7}}, "'/a/items'", "an integer"),
        ("/guest/id", {"guest": [{"id": "101"}]}, "'/guest'", "an array"),
        ("/guest/id", {"guest": "101"}, "'/guest'", "a string"),
        ("/guest_id", [{"guest_id": "101"}], "the top level", "an array"),  # a batch
        ("/guest_id", "101", "the top level", "a string"),
        ("/stays/*/*", {"stays": [[None], "101"]}, "'/stays/*'", "a string"),
        ("/x~1y/*/id", {"x/y": 1}, "'/x~1y'", "an integer"),
    ],
)
def test_a_strict_trie_refuses_a_value_its_pointer_cannot_enter(
    pointer: str, doc: object, at: str, found: str
) -> None:
    strict = pointers.compile_pointers([(pointer, "room")], strict=True)
    for run in (lambda d: translate.collect(d, strict, []), lambda d: _run_both(d, strict)):
        with pytest.raises(pointers.NotAnId) as err:
            run(copy.deepcopy(doc))
        assert (err.value.name, err.value.entity_type, err.value.found) == (pointer, "room", found)
        assert f"meets {found} at {at}, not an object" in err.value.problem
    assert _run_both(doc, pointers.compile_pointers([(pointer, "room")])) == ([], [])


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"items": None},
        {"items": []},
        {"items": [None, {}, {"room_id": None}, {"other": True}]},
        {"items": {"a": None}},
        {"a": None},
        {"a": {"items": None}},
        {"guest": None},
        {"guest": {}},
        None,
    ],
)
def test_absent_paths_and_nulls_pass_a_strict_trie(doc: object) -> None:
    fields = [("/items/*/room_id", "room"), ("/a/items/*/room_id", "room"), ("/guest/id", "g")]
    strict = pointers.compile_pointers(fields, strict=True)
    before = copy.deepcopy(doc)
    assert _run_both(doc, strict) == ([], []) and doc == before


def test_a_refusal_names_the_field_never_the_value() -> None:
    huge = "9" * 1_000_000
    for doc in ({"guest_id": [huge]}, {"guest_id": {huge: huge}}, {"items": huge}):
        trie = pointers.compile_pointers(
            [("/guest_id", "guest"), ("/items/*/room_id", "room")], strict=True
        )
        with pytest.raises(pointers.NotAnId) as err:
            translate.collect(doc, trie, [])
        assert len(str(err.value)) < 200 and "999" not in str(err.value)


def test_an_index_under_a_wildcard_enters_arrays_too() -> None:
    # A node holding an index is entered in arrays as well as objects: /stays/*/0 reaches
    # "101" in [["101", "x"]] and "102" in {"0": "102"}: a strict route translates or
    # refuses both.
    trie = pointers.compile_pointers([("/stays/*/0", "room")], strict=True)
    assert _run_both({"stays": [["101", "x"], {"0": "102"}]}, trie) == (["101", "102"], ["102"])


@pytest.mark.parametrize(
    ("query", "found", "lenient"),
    [
        ("guest=", "an empty value", []),
        ("a=1&guest", "an empty value", []),
        ("guest=G-1&guest=G-2", "a repeated parameter", ["G-1", "G-2"]),
        ("guest=G-1&gu%65st=G-2", "a repeated parameter", ["G-1", "G-2"]),  # decoded name
        ("guest=G-1&guest=", "a repeated parameter", ["G-1"]),
    ],
)
def test_a_strict_query_refuses_empty_and_repeated_parameters(
    query: str, found: str, lenient: list[str]
) -> None:
    with pytest.raises(pointers.NotAnId) as err:
        translate.query_ids(query, {"guest": "guest"}, strict=True)
    assert (err.value.name, err.value.entity_type, err.value.found) == ("guest", "guest", found)
    # Not strict: each value translated, empty ones skipped (forwarded as they are).
    assert [v for _, _, _, v in translate.query_ids(query, {"guest": "guest"})] == lenient
    assert translate.query_ids("guest=G-1&room=&x=", {"guest": "guest"}, strict=True) == [
        (0, "guest", "guest", "G-1")
    ]


@pytest.mark.skipif(not textids.AVAILABLE, reason="gateway._idscan is not built")
@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "unmapped", "invalidate", "later", "tenant"]),
            st.sampled_from(["a", "b", "c", "é", "", "R1"]),
        ),
        max_size=60,
    )
)
def test_the_scanners_index_is_the_fresh_view(ops: list[tuple[str, str]]) -> None:
    """Whatever happens to the cache (lookups stored, ids found unmapped, changes
    announced, entries expiring or evicted by the bound), the Index the scanner reads
    answers exactly as the fresh dict the walk reads."""
    cache = MappingCache(CacheLimits(max_entries=4, max_bytes=10**6, ttl=10, negative_ttl=5))
    scope = (IN, "t", "s")
    now = time.monotonic()
    for n, (op, key) in enumerate(ops):
        if op == "put":
            cache.put_many(scope, {("room", key): f"u{n}"}, cache.generation)
        elif op == "unmapped":
            cache.put_many(scope, {("room", key): None}, cache.generation)
        elif op == "invalidate":
            cache.invalidate_rows([("t", "s", "room", "whatever", key)])
        elif op == "tenant":
            cache.invalidate_tenants(["t"])
        else:
            now += 6
        fresh = cache.fresh(scope, now, "room")
        (index,) = cache.fresh_indexes(scope, now, ("room",))
        assert len(index) == len(fresh)
        for k in ["a", "b", "c", "é", "", "R1"]:
            assert index.get(k) == fresh.get(k)
