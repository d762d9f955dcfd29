"""Field pointers of routes.yaml (``translate``) compiled into a trie: the part of ID
translation the route loader needs, with no I/O and no imports from other packages
(the walk that uses the trie is gateway.mapping.translate).

Pointers look like JSON pointers (RFC 6901, ``~0``/``~1`` escapes) with one addition:
``*`` stands for every element of an array (or every value of an object), so
``/items/*/room_id`` names the ``room_id`` of each item. A numeric segment indexes an
array. Several pointers are compiled into one trie and a body is walked once.

A trie compiled ``strict`` (the request pointers of an ``on_unknown: refuse`` route)
makes the walk raise :class:`NotAnId` for a value it cannot translate (see translate.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

WILDCARD = "*"
MAX_POINTER_DEPTH = 32  # segments in one pointer; deeper bodies are not worth a config
MAX_ID_LENGTH = 256  # characters of an external id (the database CHECK says the same)


def parse_pointer(text: str) -> tuple[str, ...]:
    """``/items/*/room_id`` → ``("items", "*", "room_id")``; ValueError says what is wrong."""
    if not isinstance(text, str) or not text.startswith("/"):
        raise ValueError(f"pointer must start with '/', got {text!r}")
    raw = text[1:].split("/")
    if len(raw) > MAX_POINTER_DEPTH:
        raise ValueError(f"pointer {text!r} is deeper than {MAX_POINTER_DEPTH} segments")
    out = []
    for seg in raw:
        if re.search(r"~(?![01])", seg):
            raise ValueError(f"pointer {text!r}: '~' must be followed by 0 or 1")
        if seg == "":
            raise ValueError(f"pointer {text!r} has an empty segment")
        out.append(seg.replace("~1", "/").replace("~0", "~"))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Leaf:
    """Where a pointer ends: the entity type its value holds, and the pointer as written."""

    entity_type: str
    pointer: str
    strict: bool = False  # a value here that is no id raises NotAnId (see the module)
    record: str = field(init=False, compare=False)  # api_logs key: "body:<pointer>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", "body:" + self.pointer)


class Trie(dict[str, "Trie | Leaf"]):
    """A compiled set of pointers: segment → deeper Trie, or the Leaf where a pointer ends.

    ``records`` is set (by :func:`compile_pointers`) on a node whose entries are all named
    fields ending in a Leaf, such as the ``room_id`` of ``/items/*/room_id``: an array of
    objects under it is then walked by the fast path, without re-checking the node.
    ``chain`` is set on a node from which one line of object fields leads to such an
    array, ``(("items",), star, fields)`` for that pointer, ``star`` being the node holding
    ``*`` and ``fields`` its ``records``: the walk then follows the line directly.
    ``lists`` says whether a segment here can enter an array (``*`` or an index); ``at`` is
    the node's place as a pointer and ``first`` a leaf below it, which name the field when
    a ``strict`` node meets a value it cannot enter."""

    __slots__ = ("at", "chain", "compiled", "first", "lists", "records", "strict")

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, Leaf]] | None = None
        self.chain: tuple[tuple[str, ...], Trie, list[tuple[str, Leaf]]] | None = None
        self.strict = self.lists = False
        self.at = ""
        self.first: Leaf | None = None
        self.compiled: Any = None  # the form a faster walker made of it (mapping.textids)


class NotAnId(ValueError):
    """A value a strict trie (or query) cannot translate: ``name`` is the pointer (or the
    query parameter) it belongs to, ``found`` what it is (never the value itself, which
    may be huge), ``problem`` the rest of a sentence that starts with the field's name."""

    def __init__(self, name: str, entity_type: str, found: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name, self.entity_type, self.found, self.problem = name, entity_type, found, problem


def _kind(value: Any) -> str:
    """What a JSON value is, in words, for an error message."""
    if value is True or value is False:
        return "true" if value else "false"
    kind = type(value)
    if kind is str:
        return "a string" if value else "an empty string"
    names = {list: "an array", dict: "an object", int: "an integer", float: "a fractional number"}
    return names.get(kind, "a value")


def not_an_id(value: Any, leaf: Leaf) -> NotAnId:
    kind = _kind(value)
    problem = f"holds {kind}, not a {leaf.entity_type} id (a non-empty string or an integer)"
    return NotAnId(leaf.pointer, leaf.entity_type, kind, problem)


def _not_enterable(value: Any, leaf: Leaf, at: str, need: str) -> NotAnId:
    kind, where = _kind(value), repr(at) if at else "the top level"
    problem = (
        f"meets {kind} at {where}, not {need}, so its {leaf.entity_type} ids cannot be translated"
    )
    return NotAnId(leaf.pointer, leaf.entity_type, kind, problem)


def not_a_container(value: Any, node: Trie) -> NotAnId:
    assert node.first is not None  # every node but an empty root has a leaf below
    return _not_enterable(value, node.first, node.at, _need(node))


def _need(node: Trie) -> str:
    return "an object or array" if node.lists else "an object"


def not_a_record(value: Any, leaf: Leaf) -> NotAnId:
    """An element of an array of records (``/items/*``) that is no object."""
    return _not_enterable(value, leaf, leaf.pointer.rpartition("/")[0], "an object")


def compile_pointers(fields: Iterable[tuple[str, str]], strict: bool = False) -> Trie:
    """``[(pointer, entity_type), ...]`` → a trie; ValueError when two pointers collide.
    A ``strict`` trie raises NotAnId when walked over a value it cannot translate."""
    root = Trie()
    for pointer, entity_type in fields:
        segments = parse_pointer(pointer)
        node = root
        for seg in segments[:-1]:
            nxt = node.setdefault(seg, Trie())
            if isinstance(nxt, Leaf):
                raise ValueError(f"pointer {pointer!r} goes inside pointer {nxt.pointer!r}")
            node = nxt
        last = segments[-1]
        if last in node:
            raise ValueError(f"pointer {pointer!r} overlaps another pointer")
        node[last] = Leaf(entity_type, pointer, strict)
    _refuse_shared_ids(root)
    _seal(root, strict and bool(root), "")
    return root


def _refuse_shared_ids(node: Trie) -> None:
    """ValueError when two pointers can name the same value, such as ``/rooms/0`` and
    ``/rooms/*``, or ``/a/*/id`` and ``/a/b/*``: that id would be translated twice (the
    second time from the first's result)."""
    star = node.get(WILDCARD)
    for seg, sub in node.items():
        if star is not None and seg != WILDCARD:
            both = _shared_leaf(star, sub)
            if both is not None:
                raise ValueError(f"pointers {both[0]!r} and {both[1]!r} can name the same id")
        if type(sub) is Trie:
            _refuse_shared_ids(sub)


def _shared_leaf(a: Trie | Leaf, b: Trie | Leaf) -> tuple[str, str] | None:
    """The pointers of a leaf under ``a`` and one under ``b`` that the same value reaches,
    or None. A leaf names a string or an integer, a trie goes inside an object or an array:
    a leaf and a trie never meet."""
    if isinstance(a, Leaf):
        return (a.pointer, b.pointer) if isinstance(b, Leaf) else None
    if isinstance(b, Leaf):
        return None
    for seg, sub in a.items():
        others = list(b.values()) if seg == WILDCARD else [b[k] for k in (seg, WILDCARD) if k in b]
        for other in others:
            found = _shared_leaf(sub, other)
            if found is not None:
                return found
    return None


def is_index(seg: str) -> bool:
    """Whether a segment indexes an array: ASCII digits only (``"²".isdigit()`` is true),
    no leading zero (RFC 6901; ``00`` is only ever an object's key, so ``/a/00`` and
    ``/a/0`` cannot name the same element)."""
    return seg.isascii() and seg.isdigit() and (seg == "0" or seg[0] != "0")


def _seal(node: Trie, strict: bool, at: str) -> None:
    """Set ``records`` on every flat node and ``chain`` where it applies, and each node's
    ``strict``, ``lists``, ``at`` and ``first`` (see Trie). A node with an index segment is
    not flat: an array element may be an array that the index enters."""
    node.strict, node.at = strict, at
    node.lists = any(seg == WILDCARD or is_index(seg) for seg in node)
    flat = not node.lists and all(type(v) is Leaf for v in node.values())
    node.records = [(k, v) for k, v in node.items() if type(v) is Leaf] if flat else None
    for seg, sub in node.items():
        if type(sub) is Trie:
            _seal(sub, strict, f"{at}/{seg.replace('~', '~0').replace('/', '~1')}")
        if node.first is None:
            node.first = sub if type(sub) is Leaf else sub.first  # type: ignore[union-attr]
    if len(node) != 1:
        return
    seg, sub = next(iter(node.items()))
    if type(sub) is not Trie:
        return
    if seg == WILDCARD:
        node.chain = ((), node, sub.records) if sub.records is not None else None
    elif not is_index(seg) and sub.chain is not None:  # an index may meet an array
        path, star, fields = sub.chain
        node.chain = ((seg, *path), star, fields)
