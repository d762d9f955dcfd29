"""ID translation in the proxy: cached lookups, and one request's way in and out.

For a route with a ``translate`` block (routes.yaml), the pipeline calls
:meth:`Translator.start` once the partner is known, then ``inbound`` (path, query, body:
external ids → internal UUIDs, all ids of the request resolved with one cache call and at
most one database query) and ``outbound`` (answer body: internal UUIDs → the partner's
external ids; auto-mapping after a create). What was rewritten is in ``Flow.record``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import asyncpg
import orjson

from gateway import metrics, pointers
from gateway.db.pool import REQUEST_DEADLINE, bounded
from gateway.errors import ClientError, GatewayError, ServiceUnavailable, UpstreamError
from gateway.mapping import store, textids, translate
from gateway.mapping.cache import IN, OUT, MappingCache, Pair, Scope
from gateway.routes import Route, Translation

log = logging.getLogger(__name__)

# What a lookup may raise when PostgreSQL is unreachable or refuses (wrapped at the boundary).
DATABASE_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresError,
    store.MappingStoreError,
)


class MappingNotFound(ClientError):
    """An external id with no mapping, on a route that refuses those (404 or 422)."""

    code = "mapping_not_found"

    def __init__(self, status: int, where: str, entity_type: str, value: str) -> None:
        value = _printable(value)
        super().__init__(
            f"{where} holds {entity_type} id {value!r}, which has no mapping "
            "for this external system"
        )
        self.status = status
        self.where, self.entity_type, self.value = where, entity_type, value

    def details(self) -> dict[str, Any]:
        return {"field": self.where, "entity_type": self.entity_type, "id": self.value}


class Untranslatable(ClientError):
    """On a route that refuses unknown ids, a value where an id belongs that cannot be one
    (an array, an object, a boolean, a fractional number, an empty string, or a container
    on a pointer's way that it cannot enter; a query parameter empty or repeated): 422,
    so an untranslated value never reaches the upstream. Names the field, never the value."""

    status = 422
    code = "untranslatable_id"

    def __init__(self, where: str, err: pointers.NotAnId) -> None:
        super().__init__(f"{where} {err.problem}")
        self.where, self.entity_type, self.found = where, err.entity_type, err.found

    def details(self) -> dict[str, Any]:
        return {"field": self.where, "entity_type": self.entity_type, "found": self.found}


class Mappings:
    """Lookups through the cache; the misses of one call go to PostgreSQL in one query."""

    def __init__(
        self, pool: asyncpg.Pool, cache: MappingCache, deadline: float = REQUEST_DEADLINE
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.deadline = deadline  # a hung database answers 503 mapping_unavailable
        self.hits = metrics.MAPPING_CACHE_HIT_TALLIES
        self.misses = {w: metrics.MAPPING_CACHE_MISSES.labels(w) for w in (IN, OUT)}

    async def resolve(self, scope: Scope, pairs: Iterable[Pair]) -> dict[Pair, str | None]:
        """``(entity_type, id)`` → the other id, or None when there is no usable mapping."""
        found, missing = self.cache.get_many(scope, pairs)
        if found:
            self.hits[scope[0]].n += len(found)
        if missing:
            self.misses[scope[0]].inc(len(missing))
            found.update(await self.fetch(scope, missing))
        return found

    async def fetch(self, scope: Scope, missing: Iterable[Pair]) -> dict[Pair, str | None]:
        """One query for all ``missing`` pairs; the answers are cached (negative ones too)."""
        way, tenant, system = scope
        generation = self.cache.generation
        values: dict[Pair, str | None] = dict.fromkeys(missing)
        # Answers may spell a UUID in capitals; look up the canonical form, and cache only
        # canonical spellings (invalidation names those) and non-UUIDs (never mappable).
        asked = {p: (p[0], _lookup_form(way, p[1])) for p in values}
        query = {q for q in asked.values() if q[1] is not None}
        rows = await self._query(way, tenant, system, list(query)) if query else []
        answers = {(et, source): target for et, source, target in rows}
        for pair, q in asked.items():
            values[pair] = answers.get(q)  # type: ignore[arg-type]
        cacheable = {p: v for p, v in values.items() if asked[p][1] in (None, p[1])}
        self.cache.put_many(scope, cacheable, generation)
        return values

    async def _query(
        self, way: str, tenant: str, system: str, pairs: list[tuple[str, str | None]]
    ) -> list[tuple[str, str, str]]:
        lookup = store.lookup_internal if way == IN else store.lookup_external
        metrics.MAPPING_DB_LOOKUPS.inc()
        try:
            async with bounded(self.pool, self.deadline) as conn:
                return await lookup(conn, uuid.UUID(tenant), system, pairs)  # type: ignore[arg-type]
        except DATABASE_DOWN as exc:
            log.warning("mapping lookup failed: %s", type(exc).__name__)
            raise ServiceUnavailable(
                "ID mappings cannot be read right now", code="mapping_unavailable"
            ) from None

    def forget(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Drop cache entries at once after a change made by this process."""
        self.cache.invalidate_rows(rows)

    async def auto_map(
        self,
        tenant: str,
        system: str,
        auto: Any,
        external: str,
        internal: uuid.UUID,
        key_id: str | None,
    ) -> dict[str, Any]:
        """Record a mapping after a create; never overwrites. Returns what happened."""
        new = store.NewMapping(auto.entity_type, internal, system, external)
        try:
            async with bounded(self.pool, self.deadline) as conn:
                actor = store.Actor(f"key:{key_id}", uuid.UUID(key_id) if key_id else None)
                made, existing = await store.record_auto(conn, uuid.UUID(tenant), new, actor)
        except DATABASE_DOWN as exc:
            log.warning("auto-mapping failed: %s", type(exc).__name__)
            return {"result": "failed", "error": type(exc).__name__}
        if made is None:
            held = existing.public() if existing else None
            log.warning("auto-mapping refused: %s %r already mapped", auto.entity_type, external)
            return {"result": "conflict", "conflicting": held and held["id"]}
        self.forget([made.cache_row()])
        return {"result": "created", "mapping_id": str(made.id)}


@dataclass(frozen=True, slots=True)
class Translator:
    mappings: Mappings
    max_response_bytes: int  # chunked answers on translated routes are read up to this

    def start(self, route: Route, tenant: str, system: str, key_id: str | None) -> Flow:
        """A flow for one call of ``route`` by a key of ``tenant`` and ``system``; what it
        rewrites is in ``Flow.record``."""
        assert route.translate is not None
        return Flow(self, route.translate, route, tenant, system, key_id)


class Flow:
    """One request on a translated route."""

    __slots__ = (
        "_forwarded",
        "_forwarded_text",
        "answer_checked",
        "auto_external",
        "key_id",
        "m",
        "max_response_bytes",
        "record",
        "request_checked",
        "route",
        "system",
        "tenant",
        "tr",
    )

    def __init__(
        self,
        translator: Translator,
        tr: Translation,
        route: Route,
        tenant: str,
        system: str,
        key_id: str | None,
    ) -> None:
        self.m = translator.mappings
        self.max_response_bytes = translator.max_response_bytes
        self.tr, self.route = tr, route
        self.tenant, self.system, self.key_id = tenant, system, key_id
        self.record: dict[str, Any] = {}  # the api_logs row's ``translated`` column
        self.auto_external: str | None = None
        self._forwarded: Any = None  # the request body as forwarded, parsed (see forwarded)
        self._forwarded_text: bytes | None = None  # or as text, when spliced
        # The scanner read the request body, or wrote the answer, as JSON (RFC 8259): its
        # capture need not check the syntax again (CapturePolicy.body's ``checked``).
        self.request_checked = self.answer_checked = False

    @property
    def translates_response(self) -> bool:
        return bool(self.tr.response_trie) or self.tr.auto_map is not None

    # -- partner → upstream ---------------------------------------------------------------

    async def inbound(
        self, raw_path: str, query: str, body: bytes | None, parsed: Any = None
    ) -> tuple[str, str, bytes | None]:
        """Replace external ids in path, query and body by internal UUIDs. ``parsed`` is
        the body already parsed by capture (rewritten in place), or None to parse here."""
        tr, scope = self.tr, (IN, self.tenant, self.system)
        m = self.route.regex.fullmatch(raw_path) if tr.path_params else None
        in_path = translate.path_ids(m, dict(tr.path_params)) if m else []
        in_query = self._query_ids(query) if tr.query_params else []
        done: dict[str, Any] = {}
        text, doc, rest = self._body_ids(body, parsed, scope, done)
        if not (in_path or in_query or rest):  # the cache mapped every id, or there were none
            if not done:
                return raw_path, query, body
            self.record["request"] = done
            return raw_path, query, self._request_out(text, doc)
        extra = {(p[1], p[2]) for p in in_path} | {(q[2], q[3]) for q in in_query}
        unknown: list[translate.Slot] = []
        if isinstance(text, TextIds):
            resolved = await self._fill_text(scope, text, extra, done, unknown)
        else:
            resolved = await self._fill(scope, rest, extra, done, unknown)
        self._check_unknown(in_path, in_query, unknown, resolved)
        rewritten = bool(done)
        path_new = [(p[3], v) for p in in_path if (v := resolved.get((p[1], p[2])))]
        query_new = {q[0]: v for q in in_query if (v := resolved.get((q[2], q[3])))}
        _count_params(in_path, in_query, resolved, done)
        self._note("request", done, unknown, resolved)
        if path_new:
            raw_path = translate.rewrite_path(raw_path, path_new)
        if query_new:
            query = translate.rewrite_query(query, query_new)
        if not rewritten:
            return raw_path, query, body
        return raw_path, query, self._request_out(text, doc)

    def _body_ids(
        self, body: bytes | None, parsed: Any, scope: Scope, done: dict[str, Any]
    ) -> tuple[TextIds | bytes | None, Any, list[translate.Slot]]:
        """The request body's ids: found in its text and looked up in the cache (textids),
        or walked in its parsed value (rewritten in place). The ids the cache did not map
        are left in the list returned."""
        text = None
        if type(body) is bytes and body and scans_request_text(self.tr):
            text = self._text(body, self.tr.request_trie, scope, done)
        if text is None:
            rest: list[translate.Slot] = []
            return None, self._request_doc(body, parsed, scope, done, rest), rest
        self.request_checked = True
        if isinstance(text, bytes):  # every id mapped: the body as it goes upstream
            self._forwarded_text = text
            return text, None, []
        self._forwarded_text = text.body  # until ids are written into it (_request_out)
        return text, None, text.rest

    def _text(
        self, body: bytes, trie: pointers.Trie, scope: Scope, done: dict[str, Any]
    ) -> TextIds | bytes | None:
        """The body's ids found in its text, the cache's fresh entries rewritten (counted
        in ``done``): the new body when the cache mapped every id (the body itself when it
        has none), else a TextIds holding the rest; None when the scanner leaves the body
        to the parsed walk."""
        compiled = trie.compiled or textids.program(trie)
        if compiled is None:
            return None
        indexes = self.m.cache.fresh_indexes(scope, time.monotonic(), compiled.entity_types)
        found = compiled.scanner.scan(body, indexes, done)
        if found is None:
            return None
        hits = sum(found.hits)
        if hits:
            self.m.hits[scope[0]].n += hits
        return found.out if found.out is not None else TextIds(body, found)

    def _request_out(self, text: TextIds | bytes | None, doc: Any) -> bytes:
        """The rewritten request body: spliced into its text, or written from its value."""
        if isinstance(text, bytes):
            return text
        if text is not None:
            self._forwarded_text = out = text.spliced()
            return out
        return _encode(doc, ClientError, "request body", "malformed_body")

    @property
    def forwarded(self) -> Any:
        """The request body as forwarded (internal ids), parsed (for sync, on the routes
        that have it); None when there was none to translate."""
        if self._forwarded is None and self._forwarded_text is not None:
            self._forwarded = orjson.loads(self._forwarded_text)
        return self._forwarded

    async def _fill_text(
        self,
        scope: Scope,
        text: TextIds,
        extra: set[Pair],
        done: dict[str, Any],
        unknown: list[translate.Slot],
    ) -> dict[Pair, str | None]:
        """:meth:`_fill` for ids found in the text: the cache's misses and ``extra`` in one
        resolve; ``unknown`` gets the ids left unmapped, in document order."""
        answers = await self.m.resolve(scope, text.wanted() | extra) if text.rest or extra else {}
        if text.rest:
            unknown.extend(text.fill(answers, done))
        return answers

    def _query_ids(self, query: str) -> list[tuple[int, str, str, str]]:
        """The declared query parameters; a strict route refuses one empty or repeated."""
        try:
            return translate.query_ids(query, dict(self.tr.query_params), self.tr.refuse_unknown)
        except pointers.NotAnId as err:
            raise Untranslatable(f"query parameter {err.name!r}", err) from None

    def _walk(
        self,
        doc: Any,
        trie: pointers.Trie,
        scope: Scope,
        done: dict[str, Any],
        rest: list[Any],
        field: str = "body field",
    ) -> None:
        """One pass over the body: ids the cache maps (fresh) are rewritten in place and
        counted in ``done`` (empty before the walk) under ``body:<pointer>``; every other
        id goes to ``rest`` as a slot. A strict trie (the request's, on a route refusing
        unknown ids) refuses a value it cannot translate: Untranslatable, naming ``field``."""
        fresh = partial(self.m.cache.fresh, scope, time.monotonic())
        try:
            n = translate.rewrite(doc, trie, fresh, done, rest)
        except pointers.NotAnId as err:
            raise Untranslatable(f"{field} {err.name!r}", err) from None
        if n:
            self.m.hits[scope[0]].n += n

    async def _fill(
        self,
        scope: Scope,
        rest: list[translate.Slot],
        extra: set[Pair],
        done: dict[str, Any],
        unknown: list[translate.Slot],
    ) -> dict[Pair, str | None]:
        """Resolve what the walk left (and the path/query ``extra`` pairs): one cache call,
        at most one database query; rewrite those slots; unmapped ones go to ``unknown``."""
        wanted = {(s[2].entity_type, s[3]) for s in rest} | extra
        if not wanted:
            return {}
        answers = await self.m.resolve(scope, wanted)
        for slot in rest:
            new = answers.get((slot[2].entity_type, slot[3]))
            if new is None:
                unknown.append(slot)
            else:
                slot[0][slot[1]] = new
                done[slot[2].record] = done.get(slot[2].record, 0) + 1
        return answers

    def _request_doc(
        self, body: bytes | None, parsed: Any, scope: Scope, done: dict[str, Any], rest: list[Any]
    ) -> Any:
        if body is None or not self.tr.reads_request_body:
            return None
        if not isinstance(body, bytes):  # streamed: too large to buffer
            return self._untranslatable("request body too large to translate", 413)
        if not body:
            return None
        try:
            doc = orjson.loads(body) if parsed is None else parsed
        except orjson.JSONDecodeError:
            return self._untranslatable("request body is not JSON", 400)
        auto = self.tr.auto_map
        if auto is not None:  # read before the walk rewrites anything
            value = translate.value_at(doc, auto.external_id)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                self.auto_external = str(value)
        self._walk(doc, self.tr.request_trie, scope, done, rest)
        self._forwarded = doc  # rewritten in place by the walk and _fill
        return doc

    def _untranslatable(self, why: str, status: int) -> None:
        if self.tr.refuse_unknown and self.tr.request_trie:
            code = "malformed_body" if status == 400 else "payload_too_large"
            err = ClientError(f"{why}, so its ids cannot be translated", code=code)
            err.status = status
            raise err
        self.record["request_body"] = f"not translated: {why}"

    def _check_unknown(
        self,
        in_path: list[Any],
        in_query: list[Any],
        unknown: list[translate.Slot],
        resolved: dict[Pair, str | None],
        field: str = "body field",
    ) -> None:
        """On a route that refuses unknown ids, MappingNotFound for the first id left
        unmapped: path parameters, query parameters, then ``field``s (body or message)."""
        if not self.tr.refuse_unknown:
            return
        status = self.tr.unknown_status
        for name, et, value, _ in in_path:
            if resolved.get((et, value)) is None:
                raise MappingNotFound(status or 404, f"path parameter {name!r}", et, value)
        for _, name, et, value in in_query:
            if resolved.get((et, value)) is None:
                raise MappingNotFound(status or 422, f"query parameter {name!r}", et, value)
        for _, _, leaf, value in unknown:
            where = f"{field} {leaf.pointer!r}"
            raise MappingNotFound(status or 422, where, leaf.entity_type, value)

    def _note(
        self,
        side: str,
        done: dict[str, Any],
        unknown: list[translate.Slot],
        resolved: dict[Pair, str | None],
    ) -> None:
        """Which fields were rewritten, and how many ids each (never the ids themselves)."""
        self.record[side] = done
        unmapped = len(unknown)
        if resolved:
            unmapped += sum(1 for v in resolved.values() if v is None)
        if unmapped:
            self.record[f"{side}_unmapped"] = unmapped

    # -- WebSocket messages -----------------------------------------------------------------

    async def message(self, text: str, inbound: bool) -> str:
        """One WebSocket text message, translated like a body at the route's pointers:
        partner → upstream (``inbound``) with ``request_body``, refused as the route says
        (MappingNotFound, or ClientError when not JSON); upstream → partner with
        ``response_body``, unknown ids left as they are. Counted per pointer under
        ``client_messages`` / ``upstream_messages`` in the row's ``translated`` (ids left
        untranslated under ``*_unmapped``)."""
        trie = self.tr.request_trie if inbound else self.tr.response_trie
        if not trie:
            return text
        strict = inbound and self.tr.refuse_unknown
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            if strict:
                raise ClientError(
                    "message is not JSON, so its ids cannot be translated", code="malformed_body"
                ) from None
            return text
        scope = (IN if inbound else OUT, self.tenant, self.system)
        done: dict[str, Any] = {}
        rest: list[translate.Slot] = []
        unknown: list[translate.Slot] = []
        self._walk(doc, trie, scope, done, rest, "message field")
        if rest:
            await self._fill(scope, rest, set(), done, unknown)
        if inbound:
            self._check_unknown([], [], unknown, {}, "message field")
        side = "client_messages" if inbound else "upstream_messages"
        counts = self.record.setdefault(side, {})
        for field, n in done.items():
            counts[field] = counts.get(field, 0) + n
        if unknown:
            self.record[f"{side}_unmapped"] = self.record.get(f"{side}_unmapped", 0) + len(unknown)
        if not done:
            return text
        if inbound:
            return _encode(doc, ClientError, "message", "malformed_body").decode()
        return _encode(doc, UpstreamError, "upstream message", "upstream_error").decode()

    # -- upstream → partner ---------------------------------------------------------------

    async def read_capped(self, upstream: AsyncIterable[bytes]) -> bytes:
        """An answer of unknown length, read whole so it can be translated (bounded)."""
        data = bytearray()
        async for chunk in upstream:
            data += chunk
            if len(data) > self.max_response_bytes:
                raise UpstreamError(
                    f"upstream answer exceeds {self.max_response_bytes} bytes, too large to "
                    "translate its ids"
                )
        return bytes(data)

    async def outbound(self, status: int, data: bytes, encoding: str) -> tuple[bytes, Any]:
        """Auto-map after a create, then replace internal UUIDs by the partner's ids.
        Returns the answer for the partner and, when this wrote it (ids were rewritten),
        the value it was written from, so capture need not parse it again; else None."""
        if not data:
            return data, None
        if encoding and encoding != "identity":
            self.record["response_body"] = "not translated: compressed answer"
            return data, None
        scope = (OUT, self.tenant, self.system)
        done: dict[str, Any] = {}
        if self.tr.auto_map is None and self.tr.response_trie:
            text = self._text(data, self.tr.response_trie, scope, done)
            self.answer_checked = text is not None  # what goes back: that text, or spliced
            if text is not None:
                return await self._outbound_text(scope, text, done), None
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.record["response_body"] = "not translated: answer is not JSON"
            return data, None
        if self.tr.auto_map is not None:
            await self._auto_map(status, doc)
        rest: list[translate.Slot] = []
        self._walk(doc, self.tr.response_trie, scope, done, rest)
        unknown: list[translate.Slot] = []
        if rest:
            await self._fill(scope, rest, set(), done, unknown)
        if done or unknown:
            self._note("response", done, unknown, {})
        if not done:
            return data, None
        return _encode(doc, UpstreamError, "upstream answer", "upstream_error"), doc

    async def _outbound_text(
        self, scope: Scope, text: TextIds | bytes, done: dict[str, Any]
    ) -> bytes:
        """:meth:`outbound` for an answer whose ids were found in its text."""
        if isinstance(text, bytes):  # the cache mapped every id: the new answer
            if done:
                self.record["response"] = done
            return text
        unknown: list[translate.Slot] = []
        if text.rest:
            await self._fill_text(scope, text, set(), done, unknown)
        if done or unknown:
            self._note("response", done, unknown, {})
        return text.spliced() if done else text.body

    async def _auto_map(self, status: int, doc: Any) -> None:
        auto = self.tr.auto_map
        if auto is None or status not in auto.statuses or self.auto_external is None:
            return
        internal = translate.value_at(doc, auto.internal_id)
        canonical = _canonical_uuid(internal) if isinstance(internal, str) else None
        if canonical is None:
            self.record["auto_map"] = {"result": "skipped: no UUID in the answer"}
            return
        self.record["auto_map"] = await self.m.auto_map(
            self.tenant,
            self.system,
            auto,
            self.auto_external,
            uuid.UUID(canonical),
            self.key_id,
        )


def wants_parsed_request(tr: Translation) -> bool:
    """Whether :meth:`Flow.inbound` reads a request body as a parsed value (then its
    capture parses it once for both): on a route that auto-maps (which reads a value), or
    whose pointers the text scanner cannot walk. Otherwise the ids are found in the text."""
    return tr.reads_request_body and not scans_request_text(tr)


def scans_request_text(tr: Translation) -> bool:
    """Whether the request body's ids are found in its text: the route has request
    pointers the scanner can walk, and does not auto-map (which reads a parsed value).
    The scanner then also checks the body's syntax (``Flow.request_checked``)."""
    return tr.auto_map is None and textids.program(tr.request_trie) is not None


def _count_params(
    in_path: list[Any], in_query: list[Any], resolved: dict[Pair, str | None], done: dict[str, Any]
) -> None:
    """Path and query parameters rewritten, counted in ``done`` (the ``translated`` column)."""
    for p in in_path:
        if resolved.get((p[1], p[2])):
            done[f"path:{p[0]}"] = 1
    for _, name, et, value in in_query:
        if resolved.get((et, value)):
            done[f"query:{name}"] = done.get(f"query:{name}", 0) + 1


class TextIds:
    """The ids of one body found in its text (the scanner) when the cache's fresh entries
    did not map them all: ``news[leaf][i]`` the replacement of the i-th id at that leaf,
    None while unknown; ``rest`` those, as ``(None, i, leaf, id)`` slots. (When the cache
    maps every id, the scanner writes the new body itself and there is no TextIds.)"""

    __slots__ = ("body", "found", "news", "rest")

    def __init__(self, body: bytes, found: textids.Found) -> None:
        assert found.values is not None and found.news is not None  # some ids were not mapped
        self.body, self.found, self.news = body, found, found.news
        self.rest: list[translate.Slot] = []
        for leaf, ids, new in zip(found.leaves, found.values, self.news, strict=True):
            self.rest.extend((None, i, leaf, v) for i, v in enumerate(ids) if new[i] is None)

    def wanted(self) -> set[Pair]:
        return {(slot[2].entity_type, slot[3]) for slot in self.rest}

    def fill(
        self, answers: Mapping[Pair, str | None], done: dict[str, Any]
    ) -> list[translate.Slot]:
        """Write the resolved ids in; the ones left unmapped, in document order."""
        leaves = self.found.leaves
        for _, i, leaf, value in self.rest:
            new = answers.get((leaf.entity_type, value))
            if new is not None:
                self.news[leaves.index(leaf)][i] = new
                done[leaf.record] = done.get(leaf.record, 0) + 1
        left = {(n, s[1]) for s in self.rest if self.news[n := leaves.index(s[2])][s[1]] is None}
        if not left:
            return []
        values = self.found.values
        assert values is not None  # there were ids to fill
        return [
            (None, i, leaves[n], values[n][i])
            for n, i in textids.in_order(self.found)
            if (n, i) in left
        ]

    def spliced(self) -> bytes:
        return textids.splice(self.body, self.found, self.news)


def _encode(doc: Any, error: type[GatewayError], what: str, code: str) -> bytes:
    """The rewritten document as JSON; orjson writes at most 254 levels of nesting (it
    reads 1024), so a deeper document is refused with a JSON error, never a 500."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # orjson.JSONEncodeError: "Recursion limit reached"
        raise error(f"{what} is nested too deeply to translate its ids", code=code) from None


def _lookup_form(way: str, value: str) -> str | None:
    """What to ask PostgreSQL for ``value``, or None when it can have no mapping: answers
    hold UUIDs (canonical spelling); external ids are at most MAX_ID_LENGTH characters of
    text PostgreSQL can store (no NUL, no lone surrogates)."""
    if way == OUT:
        return _canonical_uuid(value)
    if len(value) > pointers.MAX_ID_LENGTH or "\x00" in value:
        return None
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return value


def _printable(value: str) -> str:
    """An id as it may appear in a JSON answer and in api_logs (no NUL, no surrogates)."""
    value = value[: pointers.MAX_ID_LENGTH].replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")


def _canonical_uuid(value: str) -> str | None:
    """The lowercase hyphenated form, or None when ``value`` is no UUID."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
