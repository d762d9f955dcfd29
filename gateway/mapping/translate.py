"""Pure parts of ID translation: field pointers, finding ids in a parsed body, rewriting
path parameters and query strings. No I/O here; gateway.mapping.flow drives it.

Pointers look like JSON pointers (RFC 6901, ``~0``/``~1`` escapes) with one addition:
``*`` stands for every element of an array (or every value of an object), so
``/items/*/room_id`` names the ``room_id`` of each item. A numeric segment indexes an
array. Several pointers are compiled into one trie and the body is walked once.

A trie compiled ``strict`` (the request pointers of an ``on_unknown: refuse`` route)
raises :class:`NotAnId` for a value it cannot translate: at a pointer, anything but a
non-empty string, an integer or null; on the way to one, anything but null or a container
the next segment can enter (an object; an array for ``*`` or an index). Null is "no
reference" and passes, like an absent field. Non-strict tries skip such values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

from gateway.pointers import (
    WILDCARD,
    Leaf,
    NotAnId,
    Trie,
    is_index,
    not_a_container,
    not_a_record,
    not_an_id,
)

# One id found in a body: the container holding it, its key there, and what it is.
Slot = tuple[Any, Any, Leaf, str]
# Called for each id found: (container, key, leaf, id as a string).
Emit = Callable[[Any, Any, Leaf, str], None]


def collect(node: Any, trie: Trie, out: list[Slot]) -> None:
    """Append every id the trie's pointers reach in ``node`` (strings and integers)."""
    walk(node, trie, lambda c, k, leaf, v: out.append((c, k, leaf, v)))


def walk(node: Any, trie: Trie, emit: Emit) -> None:
    """Call ``emit`` for every id the trie's pointers reach in ``node``.

    One pass, no copies; this runs for every translated request and answer, so the
    common shapes (an object's field, every element of an array) are handled inline."""
    if trie.chain is not None:
        path, star, fields = trie.chain
        end = _follow(node, path)
        if type(end) is list:
            _walk_records(end, fields, emit)
        elif type(end) is dict:
            _walk_dict(end, star, emit)
        elif trie.strict:
            _check_line(node, trie)
        return
    kind = type(node)
    if kind is dict:
        _walk_dict(node, trie, emit)
    elif kind is list and trie.lists:  # else no segment here can enter it
        _walk_list(node, trie, emit)
    elif trie.strict and node is not None:
        raise not_a_container(node, trie)


def _follow(node: Any, path: tuple[str, ...]) -> Any:
    """What a line of object fields (``Trie.chain``) leads to from ``node``; None when the
    line meets anything but an object on the way."""
    for seg in path:
        if type(node) is not dict:
            return None
        node = node.get(seg)
    return node


def _check_line(node: Any, trie: Trie) -> None:
    """A strict trie's ``chain`` led to no container: NotAnId for the value in the way,
    unless the line simply ends (an absent field, or null)."""
    assert trie.chain is not None
    for seg in trie.chain[0]:
        if node is None:
            return
        if type(node) is not dict:
            raise not_a_container(node, trie)
        node, trie = node.get(seg), trie[seg]  # type: ignore[assignment]
    if node is not None:
        raise not_a_container(node, trie)


def _walk_dict(node: dict[str, Any], trie: Trie, emit: Emit) -> None:
    for seg, sub in trie.items():
        if seg == WILDCARD:
            for key, child in node.items():
                _visit(node, key, child, sub, emit)
            continue
        child = node.get(seg)
        if child is None:
            continue
        if type(sub) is Leaf:
            kind = type(child)
            if kind is str and child:
                emit(node, seg, sub, child)
            elif kind is int:  # bool is not: type(True) is bool
                emit(node, seg, sub, str(child))
            elif sub.strict:
                raise not_an_id(child, sub)
        else:
            walk(child, sub, emit)  # type: ignore[arg-type]


def _walk_list(node: list[Any], trie: Trie, emit: Emit) -> None:
    for seg, sub in trie.items():
        if seg != WILDCARD:
            if is_index(seg) and int(seg) < len(node):
                _visit(node, int(seg), node[int(seg)], sub, emit)
        elif isinstance(sub, Leaf):
            for i, child in enumerate(node):
                _visit(node, i, child, sub, emit)
        elif sub.records is not None:
            _walk_records(node, sub.records, emit)
        else:
            for child in node:
                walk(child, sub, emit)


def _walk_records(node: list[Any], fields: list[tuple[str, Leaf]], emit: Emit) -> None:
    """The hot shape: an array of objects each holding ids in named fields."""
    if type(emit) is CachedRewrite:
        emit.records(node, fields)
        return
    for child in node:
        if type(child) is not dict:
            if child is not None and fields[0][1].strict:
                raise not_a_record(child, fields[0][1])
            continue
        for seg, leaf in fields:
            value = child.get(seg)
            if value is None:
                continue
            kind = type(value)
            if kind is str and value:
                emit(child, seg, leaf, value)
            elif kind is int:
                emit(child, seg, leaf, str(value))
            elif leaf.strict:
                raise not_an_id(value, leaf)


class CachedRewrite:
    """An ``emit`` for :func:`walk` that rewrites in place each id the cache maps, counting
    them per pointer in ``done`` (``body:<pointer>``), and leaves every other id in
    ``rest`` as a slot to be resolved later. ``fresh(entity_type)`` gives the cache's found
    and unexpired entries of a type, ``id → other id`` (MappingCache.fresh)."""

    __slots__ = ("_views", "done", "fresh", "rest")

    def __init__(
        self,
        fresh: Callable[[str], Mapping[str, str]],
        done: dict[str, int] | None = None,
        rest: list[Slot] | None = None,
    ) -> None:
        self.fresh = fresh
        self.done: dict[str, int] = {} if done is None else done
        self.rest: list[Slot] = [] if rest is None else rest
        self._views: dict[str, Mapping[str, str]] = {}

    def _view(self, entity_type: str) -> Mapping[str, str]:
        view = self._views.get(entity_type)
        if view is None:
            view = self._views[entity_type] = self.fresh(entity_type)
        return view

    def __call__(self, container: Any, key: Any, leaf: Leaf, value: str) -> None:
        new = self._view(leaf.entity_type).get(value)
        if new is not None:
            container[key] = new
            self.done[leaf.record] = self.done.get(leaf.record, 0) + 1
        else:
            self.rest.append((container, key, leaf, value))

    def records(self, node: list[Any], fields: list[tuple[str, Leaf]]) -> None:
        """:func:`_walk_records` inlined: one lookup per id."""
        _rewrite_records(node, fields, self.fresh, self.done, self.rest)


def rewrite(
    doc: Any,
    trie: Trie,
    fresh: Callable[[str], Mapping[str, str]],
    done: dict[str, int],
    rest: list[Slot],
) -> int:
    """``walk(doc, trie, CachedRewrite(fresh, done, rest))``, returning how many ids were
    rewritten. The hot shape, a line of object fields to an array of records
    (``trie.chain``), is followed here without building the emitter: the proxy runs this
    twice per translated call."""
    chain = trie.chain
    if chain is not None:
        node = _follow(doc, chain[0])
        if type(node) is list:
            return _rewrite_records(node, chain[2], fresh, done, rest)
    before = sum(done.values())
    walk(doc, trie, CachedRewrite(fresh, done, rest))
    return sum(done.values()) - before


def _rewrite_records(
    node: list[Any],
    fields: list[tuple[str, Leaf]],
    fresh: Callable[[str], Mapping[str, str]],
    done: dict[str, int],
    rest: list[Slot],
) -> int:
    """Each field of each record: ids the view maps rewritten (all at once when every
    element maps), counted in ``done``; the others left in ``rest``. Returns the count."""
    total = 0
    for seg, leaf in fields:
        view = fresh(leaf.entity_type)
        n = _rewrite_all(node, seg, view) if view else 0
        if not n:
            n = _rewrite_each(node, seg, leaf, view, rest)
        if n:
            done[leaf.record] = done.get(leaf.record, 0) + n
            total += n
    return total


def _rewrite_each(
    node: list[Any], seg: str, leaf: Leaf, view: Mapping[str, str], rest: list[Slot]
) -> int:
    get, n = view.get, 0
    for child in node:
        if type(child) is not dict:
            if leaf.strict and child is not None:
                raise not_a_record(child, leaf)
            continue
        value = child.get(seg)
        if type(value) is not str or not value:  # None, "", or no string
            if type(value) is not int:
                if leaf.strict and value is not None:
                    raise not_an_id(value, leaf)
                continue
            value = str(value)
        new = get(value)
        if new is not None:
            child[seg] = new
            n += 1
        else:
            rest.append((child, seg, leaf, value))
    return n


def _rewrite_all(node: list[Any], seg: str, view: Mapping[str, str]) -> int:
    """The common case at C speed: every element of ``node`` an object whose ``seg`` holds
    an id the view maps (a hit means a string: the view's keys are strings). Rewrites and
    returns ``len(node)`` then; else changes nothing and returns 0."""
    try:
        new = list(map(view.get, map(itemgetter(seg), node)))
    except (KeyError, TypeError):  # no such field, no object, or a list or object as value
        return 0
    if not all(new):
        return 0
    for child, value in zip(node, new, strict=True):
        child[seg] = value
    return len(new)


def _visit(container: Any, key: Any, child: Any, sub: Trie | Leaf, emit: Emit) -> None:
    kind = type(child)
    if type(sub) is Leaf:
        if kind is str and child:
            emit(container, key, sub, child)
        elif kind is int:
            emit(container, key, sub, str(child))
        elif sub.strict and child is not None:
            raise not_an_id(child, sub)
    elif kind is dict or kind is list:
        walk(child, sub, emit)  # type: ignore[arg-type]
    elif sub.strict and child is not None:
        raise not_a_container(child, sub)  # type: ignore[arg-type]


def _children(node: Any, seg: str) -> Iterable[tuple[Any, Any, Any]]:
    if isinstance(node, dict):
        if seg == WILDCARD:
            return [(node, k, v) for k, v in node.items()]
        return [(node, seg, node[seg])] if seg in node else ()
    if isinstance(node, list):
        if seg == WILDCARD:
            return [(node, i, v) for i, v in enumerate(node)]
        if is_index(seg) and int(seg) < len(node):
            return [(node, int(seg), node[int(seg)])]
    return ()


def apply(slots: Iterable[Slot], resolved: Mapping[tuple[str, str], str | None]) -> int:
    """Write the resolved ids into their containers; return how many were rewritten."""
    n = 0
    for container, key, leaf, value in slots:
        new = resolved.get((leaf.entity_type, value))
        if new is not None:
            container[key] = new
            n += 1
    return n


def count_by_pointer(
    slots: Iterable[Slot], resolved: Mapping[tuple[str, str], Any]
) -> dict[str, int]:
    """How many ids each pointer had rewritten (for the api_logs ``translated`` column)."""
    out: dict[str, int] = {}
    for _, _, leaf, value in slots:
        if resolved.get((leaf.entity_type, value)) is not None:
            out[leaf.pointer] = out.get(leaf.pointer, 0) + 1
    return out


def value_at(doc: Any, segments: tuple[str, ...]) -> Any:
    """The value a plain pointer (no ``*``) names, or None."""
    node = doc
    for seg in segments:
        found = list(_children(node, seg))
        if not found:
            return None
        node = found[0][2]
    return node


# -- path and query -----------------------------------------------------------------------


def path_ids(
    match: re.Match[str], params: Mapping[str, str]
) -> list[tuple[str, str, str, tuple[int, int]]]:
    """``(param, entity_type, decoded value, span)`` for each declared path parameter."""
    out = []
    for name, entity_type in params.items():
        raw = match.group(name)
        if raw:
            out.append((name, entity_type, unquote(raw), match.span(name)))
    return out


def rewrite_path(raw_path: str, replacements: list[tuple[tuple[int, int], str]]) -> str:
    """Replace spans of the raw path (right to left, so earlier spans stay valid)."""
    for (start, end), new in sorted(replacements, reverse=True):
        raw_path = raw_path[:start] + quote(new, safe="") + raw_path[end:]
    return raw_path


def query_ids(
    raw_query: str, params: Mapping[str, str], strict: bool = False
) -> list[tuple[int, str, str, str]]:
    """``(piece index, name, entity_type, decoded value)`` of declared query parameters.
    ``strict``: NotAnId for a declared parameter without a value (``guest=``, ``guest``)
    or given more than once; otherwise those are skipped, and each occurrence translated."""
    out: list[tuple[int, str, str, str]] = []
    if not raw_query:
        return out
    seen: set[str] = set()
    for i, piece in enumerate(raw_query.split("&")):
        name, sep, value = piece.partition("=")
        decoded = unquote_plus(name)
        entity_type = params.get(decoded)
        if entity_type is None:
            continue
        if strict and decoded in seen:
            problem = f"is given more than once; one {entity_type} id is translated per parameter"
            raise NotAnId(decoded, entity_type, "a repeated parameter", problem)
        seen.add(decoded)
        if sep and value:
            out.append((i, decoded, entity_type, unquote_plus(value)))
        elif strict:
            raise NotAnId(
                decoded, entity_type, "an empty value", f"is empty, not a {entity_type} id"
            )
    return out


def rewrite_query(raw_query: str, replacements: Mapping[int, str]) -> str:
    """Replace the values of the given ``&`` pieces; every other byte stays as it was."""
    pieces = raw_query.split("&")
    for i, new in replacements.items():
        name = pieces[i].partition("=")[0]
        pieces[i] = f"{name}={quote(new, safe='')}"
    return "&".join(pieces)
