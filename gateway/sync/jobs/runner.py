"""The sync job runner that runs in every gateway process.

    claim a due job (FOR UPDATE SKIP LOCKED + lease) → retry its due failed items
    → page the source from the cursor → translate ids → POST the batch to the target
    → record statuses, failed items and the new cursor in one transaction → next page
    → hand the job back with its next run time

A lease is renewed while the run goes on; a runner that dies leaves a lease that expires,
and another process claims the job and resumes from the last committed cursor. Every
batch is recorded only while its runner still holds the lease, so a runner that lost it
cannot move the cursor. Items cross at least once; an item whose version is already
synced is not sent again (idempotent per id + version).

ID translation, SSRF checks and api_logs capture belong to other packages: they are
handed in as callables (``Translate``, ``refuse``, ``log_call``) by gateway.app.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from yarl import URL

from gateway import metrics
from gateway.crypto import SecretBox
from gateway.errors import GatewayError
from gateway.pointers import Trie
from gateway.sync.jobs import store
from gateway.sync.jobs.config import End, JobDirection, SyncJob
from gateway.sync.model import Direction, EntityKey, Report, Side, Status
from gateway.sync.traffic import pointer_get

log = logging.getLogger(__name__)

DEFAULT_LEASE = 60.0  # seconds a claim lasts unless renewed
DEFAULT_POLL_INTERVAL = 1.0  # seconds between looks for due jobs
MAX_RUNNING = 4  # jobs run at once by one process
MAX_PAGES_PER_RUN = 10_000  # a run stops after this many pages (the next one goes on)
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # bytes read of one answer from either end
ERROR_MAX = 500  # characters of an error message kept
STATS_INTERVAL = 15.0  # seconds between updates of the since-last-success gauge
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
TENANT_HEADER = "X-Gateway-Tenant-Id"
SYSTEM_HEADER = "X-Gateway-External-System"
JOB_HEADER = "X-Gateway-Sync-Job"

# (way "in" or "out", tenant, external system, pointers, items) → per item the ids with no
# mapping, as (pointer, entity type, id); the items are rewritten in place.
Missing = list[tuple[str, str, str]]
Translate = Callable[[str, uuid.UUID, str, Trie, list[Any]], Awaitable[list[Missing]]]


@dataclass(frozen=True, slots=True)
class JobCall:
    """One HTTP request a job made, for api_logs (route = the job's name)."""

    job: str
    tenant_id: uuid.UUID
    external_system: str
    upstream: str
    request_id: str  # sent as X-Request-Id to either end
    created_at: datetime
    method: str
    url: URL
    request_headers: tuple[tuple[str, str], ...]
    request_body: bytes
    status: int  # 0: no answer
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes
    duration_ms: float
    error_code: str | None = None
    error_message: str | None = None


CallHook = Callable[[JobCall], None]


def _no_log(call: JobCall) -> None:
    return None


class BatchFailed(Exception):
    """The target (or the source) failed as a whole: the run stops, as failed."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    doc: Any  # the parsed JSON answer (None: none, or not JSON)
    error: str | None  # set when there is no usable 2xx answer


@dataclass(slots=True, eq=False)  # identity: items of one batch are kept in sets
class Item:
    raw: Any  # as the source gave it
    out: Any  # in the receiving side's ids
    entity_id: uuid.UUID | None  # the internal id (data_sync_status key)
    version: int | None
    sent_id: str | None  # the item's id as sent (matched against the target's refusals)
    error: str | None = None


class Hands:
    """What a runner reaches the outside world with."""

    def __init__(
        self,
        internal: aiohttp.ClientSession,
        external: aiohttp.ClientSession,
        refuse: Callable[[URL], str | None],
        translate: Translate,
        log_call: CallHook = _no_log,
    ) -> None:
        self.internal, self.external, self.refuse = internal, external, refuse
        self.translate, self.log_call = translate, log_call


class JobRunner:
    """Runs the configured jobs that are due, one runner per job across processes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        jobs: Sequence[SyncJob],
        box: SecretBox,
        hands: Hands,
        *,
        lease: float = DEFAULT_LEASE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool, self.box, self.hands = pool, box, hands
        self.jobs = {j.name: j for j in jobs}
        self.lease, self.poll_interval, self.clock = lease, poll_interval, clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    async def register(self, environ: Any = None) -> None:
        """Upsert the configured jobs (ConfigError when one names an unknown tenant)."""
        async with self.pool.acquire() as conn:
            await store.register(
                conn, list(self.jobs.values()), self.box, environ or os.environ, self.clock()
            )

    def start(self) -> None:
        self._loops.append(asyncio.create_task(self._claim_loop(), name="sync-jobs"))
        self._loops.append(asyncio.create_task(self._stats_loop(), name="sync-jobs-stats"))

    async def close(self, timeout: float) -> None:
        """Stop claiming; runs get ``timeout`` to finish, then are cancelled (their leases
        expire and another process resumes them from their last batch)."""
        self._stopping = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_due(self) -> int:
        """Claim and run due jobs one after another until none is due; how many ran."""
        ran = 0
        while (claimed := await self._claim()) is not None:
            await self._run(*claimed)
            ran += 1
        return ran

    # -- claiming --------------------------------------------------------------------------

    async def _claim(self) -> tuple[SyncJob, store.Claimed] | None:
        if not self.jobs:
            return None
        async with self.pool.acquire() as conn:
            got = await store.claim(conn, list(self.jobs), self.owner, self.lease, self.clock())
        if got is None:
            return None
        return self.jobs[got[0]], got[1]

    async def _claim_loop(self) -> None:
        while not self._stopping:
            try:
                while len(self._running) < MAX_RUNNING and (claimed := await self._claim()):
                    task = asyncio.create_task(self._run(*claimed), name=f"sync-job-{claimed[0]}")
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
            except DB_ERRORS as exc:
                log.warning("sync job claim failed: %s", type(exc).__name__)
            except Exception:  # a bug here must not stop every job for good
                log.exception("sync job claim round failed")
            await asyncio.sleep(self.poll_interval)

    async def _stats_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(*DB_ERRORS):
                async with self.pool.acquire() as conn:
                    rows = await conn.fetch(
                        """SELECT name, extract(epoch FROM now() - coalesce(last_success_at,
                                  created_at)) AS since FROM sync_jobs
                           WHERE name = ANY($1::text[])""",
                        list(self.jobs),
                    )
                for r in rows:
                    metrics.SYNC_JOB_SINCE_SUCCESS.labels(r["name"]).set(float(r["since"]))
            await asyncio.sleep(STATS_INTERVAL)

    # -- one run -----------------------------------------------------------------------------

    async def _run(self, job: SyncJob, claimed: store.Claimed) -> None:
        started = time.perf_counter()
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(claimed, lost), name=f"sync-lease-{job.name}")
        status, error = "succeeded", None
        try:
            await Run(self, job, claimed, lost).work()
        except store.LeaseLost:
            log.warning("sync job %s: lease lost; another runner resumes it", job.name)
            metrics.SYNC_JOB_RUNS.labels(job.name, "lost").inc()
            return
        except BatchFailed as exc:
            status, error = "failed", str(exc)[:ERROR_MAX]
        except DB_ERRORS as exc:
            status, error = "failed", f"database: {type(exc).__name__}"
        except GatewayError as exc:  # e.g. mappings unreadable (503 mapping_unavailable)
            status, error = "failed", f"{exc.code}: {exc.message}"[:ERROR_MAX]
        except Exception as exc:  # a bug: the run fails, the job is handed back
            log.exception("sync job %s failed unexpectedly", job.name)
            status, error = "failed", f"internal error: {type(exc).__name__}"
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        await self._finish(job, claimed, status, error, started)

    async def _finish(
        self, job: SyncJob, claimed: store.Claimed, status: str, error: str | None, t0: float
    ) -> None:
        next_run = job.schedule.next_after(self.clock())
        try:
            async with self.pool.acquire() as conn:
                held = await store.finish(conn, claimed, self.owner, status, error, next_run)
        except DB_ERRORS as exc:  # the lease expires; another runner takes the job
            log.warning("sync job %s: run not recorded (%s)", job.name, type(exc).__name__)
            return
        metrics.SYNC_JOB_RUNS.labels(job.name, status if held else "lost").inc()
        metrics.SYNC_JOB_DURATION.labels(job.name).observe(time.perf_counter() - t0)
        if status == "succeeded" and held:
            metrics.SYNC_JOB_SINCE_SUCCESS.labels(job.name).set(0)

    async def _heartbeat(self, claimed: store.Claimed, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                async with self.pool.acquire() as conn:
                    if not await store.renew(conn, claimed.job_id, self.owner, self.lease):
                        lost.set()
                        return
            except DB_ERRORS:
                continue  # the batch's own write checks the lease again


class Run:
    """One run of one job (see the module docstring)."""

    def __init__(
        self, runner: JobRunner, job: SyncJob, claimed: store.Claimed, lost: asyncio.Event
    ) -> None:
        self.r, self.job, self.claimed, self.lost = runner, job, claimed, lost
        self.outbound = job.direction is JobDirection.OUTBOUND
        self.auth = _auth_headers(runner.box, claimed.auth_secret)

    async def work(self) -> None:
        job = self.job
        async with self.r.pool.acquire() as conn:
            due = await store.due_items(
                conn, job, self.claimed.job_id, self.r.clock(), job.batch_size
            )
        if due:
            await self._batch(due, None, retried=True)
        cursor = self.claimed.cursor
        for _ in range(MAX_PAGES_PER_RUN):
            items, nxt = await self._page(cursor)
            if not items and (nxt is None or nxt == cursor):
                return
            await self._batch(items, nxt, retried=False)
            if nxt is None or nxt == cursor or len(items) < job.batch_size:
                return
            cursor = nxt

    def _check_lease(self) -> None:
        if self.lost.is_set():
            raise store.LeaseLost(self.job.name)

    # -- the source ----------------------------------------------------------------------

    async def _page(self, cursor: str | None) -> tuple[list[Any], str | None]:
        src = self.job.source
        query = {src.limit_param: str(self.job.batch_size)}
        if cursor is not None:
            query[src.cursor_param] = cursor
        url = src.end.url.update_query(query)
        answer = await self._call(src.end, "GET", url, b"")
        if answer.error is not None:
            raise BatchFailed(f"source: {answer.error}")
        items = pointer_get(answer.doc, src.items) if src.items else answer.doc
        if not isinstance(items, list):
            raise BatchFailed(f"source: the answer holds no list of items at {src.items!r}")
        nxt = pointer_get(answer.doc, src.next_cursor) if src.next_cursor else None
        if isinstance(nxt, bool) or not isinstance(nxt, str | int):
            return items, None
        return items, str(nxt)

    # -- one batch ---------------------------------------------------------------------------

    async def _batch(self, raw: list[Any], cursor: str | None, retried: bool) -> None:
        items = await self._prepare(_latest(raw, self.job))
        skipped = await self._skip_synced(items)
        send = [i for i in items if i.error is None and i not in skipped]
        failure = await self._send(send) if send else None
        record = self._record(items, skipped, send, cursor, len(raw), retried)
        self._check_lease()
        async with self.r.pool.acquire() as conn:
            await store.record_batch(
                conn, self.job, self.claimed, self.r.owner, self.r.lease, record, self.r.clock()
            )
        name = self.job.name
        metrics.SYNC_JOB_ITEMS.labels(name, "synced").inc(record.synced)
        metrics.SYNC_JOB_ITEMS.labels(name, "failed").inc(record.failed)
        metrics.SYNC_JOB_ITEMS.labels(name, "skipped").inc(record.skipped)
        if failure is not None:
            raise BatchFailed(f"target: {failure}")

    async def _prepare(self, raw: list[Any]) -> list[Item]:
        job = self.job
        outs = [orjson.loads(orjson.dumps(x)) for x in raw]  # copies; the raw items are kept
        way = "out" if self.outbound else "in"
        missing = await self.r.hands.translate(
            way, job.tenant_id, job.external_system, job.trie, outs
        )
        return [self._item(x, out, miss) for x, out, miss in zip(raw, outs, missing, strict=True)]

    def _item(self, raw: Any, out: Any, missing: Missing) -> Item:
        src, job = self.job.source, self.job
        own = pointer_get(raw, src.id)
        internal = own if self.outbound else pointer_get(out, src.id)
        version = pointer_get(raw, src.version) if src.version else None
        sent = pointer_get(out, src.id)
        item = Item(raw, out, _uuid(internal), None, None if sent is None else str(sent))
        if isinstance(version, int) and not isinstance(version, bool):
            item.version = version
        elif version is not None:
            item.error = f"{src.version} holds no integer version"
        if own is None or isinstance(own, dict | list | bool):
            item.error = f"{src.id} holds no id"
        elif self.outbound and item.entity_id is None:
            item.error = f"{src.id} holds {own!r}, not an internal id (a UUID)"
        elif missing and not job.pass_unknown:
            item.error = "; ".join(
                f"{p} holds {et} id {v!r}, which has no mapping for {job.external_system}"
                for p, et, v in missing
            )
        return item

    async def _skip_synced(self, items: list[Item]) -> set[Item]:
        """Items already synced at their version (or newer), or in conflict: not sent."""
        keyed = [i for i in items if i.error is None and i.entity_id is not None]
        if not keyed:
            return set()
        async with self.r.pool.acquire() as conn:
            known = await store.states(conn, self.job, [i.entity_id for i in keyed])  # type: ignore[misc]
        out = set()
        for i in keyed:
            status, synced = known.get(i.entity_id, (None, None))  # type: ignore[arg-type]
            if status == Status.CONFLICT.value:
                out.add(i)
            elif synced is not None and i.version is not None and i.version <= synced:
                out.add(i)
        return out

    async def _send(self, send: list[Item]) -> str | None:
        """POST the batch; per-item refusals are set on the items. The error when the
        target failed as a whole (every item then failed)."""
        target = self.job.target
        body = orjson.dumps({target.items_field: [i.out for i in send]})
        answer = await self._call(target.end, "POST", target.end.url, body)
        if answer.error is not None:
            for i in send:
                i.error = answer.error
            return answer.error
        refused = pointer_get(answer.doc, target.failed_items) if target.failed_items else None
        by_id = {i.sent_id: i for i in send}
        for entry in refused if isinstance(refused, list) else []:
            ref = pointer_get(entry, target.failed_id)
            item = by_id.get(None if ref is None else str(ref))
            if item is not None:
                why = pointer_get(entry, target.failed_error)
                item.error = f"target refused it: {why if why is not None else 'no reason'}"
        return None

    def _record(
        self,
        items: list[Item],
        skipped: set[Item],
        send: list[Item],
        cursor: str | None,
        read: int,
        retried: bool,
    ) -> store.BatchRecord:
        job = self.job
        side = Side.INTERNAL if self.outbound else Side.EXTERNAL
        record = store.BatchRecord([], [], [], cursor, read=read, skipped=len(skipped), errors=[])
        record.retried = read if retried else 0
        for i in items:
            if i in skipped:
                continue
            ok = i.error is None
            record.synced += ok
            record.failed += not ok
            if not ok and record.errors is not None:
                record.errors.append(
                    {"id": str(pointer_get(i.raw, job.source.id)), "error": str(i.error)}
                )
            if i.entity_id is None:
                continue
            key = EntityKey(
                job.entity_type, i.entity_id, job.external_system, Direction(job.direction.value)
            )
            status = Status.SUCCEEDED if ok else Status.FAILED
            record.reports.append(Report(key, status, side, i.version, i.error))
            if ok:
                record.succeeded.append((i.entity_id, i.version))
            else:
                record.failed_items.append((i.entity_id, i.version, i.raw))
        return record

    # -- HTTP ------------------------------------------------------------------------------------

    async def _call(self, end: End, method: str, url: URL, body: bytes) -> Answer:
        self._check_lease()
        hands, job = self.r.hands, self.job
        external = end.external_url is not None
        request_id = uuid.uuid4().hex
        headers = {"Accept": "application/json", "X-Request-Id": request_id}
        if body:
            headers["Content-Type"] = "application/json"
        if external:
            headers.update(self.auth)
        else:
            headers.update(
                {
                    TENANT_HEADER: str(job.tenant_id),
                    SYSTEM_HEADER: job.external_system,
                    JOB_HEADER: job.name,
                }
            )
        created, t0 = datetime.now(UTC), time.perf_counter()
        status, data, error = 0, b"", None
        answer_headers: tuple[tuple[str, str], ...] = ()
        refused = hands.refuse(url) if external else None
        if refused is not None:
            error = f"refused: {refused}"
        else:
            session = hands.external if external else hands.internal
            status, data, answer_headers, error = await _request(
                session, method, url, headers, body, end.timeout
            )
        call = JobCall(
            job.name,
            job.tenant_id,
            job.external_system,
            end.name,
            request_id,
            created,
            method,
            url,
            tuple(headers.items()),
            body,
            status,
            answer_headers,
            data,
            (time.perf_counter() - t0) * 1000.0,
            None if error is None else ("upstream_error" if status else "upstream_unavailable"),
            error,
        )
        hands.log_call(call)
        doc = _json(data)
        if error is None and doc is None and data:
            error = f"{end.name} answered {status} with a body that is not JSON"
        return Answer(status, doc, error)


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: dict[str, str],
    body: bytes,
    timeout: float,
) -> tuple[int, bytes, tuple[tuple[str, str], ...], str | None]:
    """(status, body, headers, error); the error is set for no answer or a non-2xx one."""
    try:
        async with asyncio.timeout(timeout):
            async with session.request(
                method, url, data=body or None, headers=headers, allow_redirects=False
            ) as resp:
                data = await _read_capped(resp)
                got = tuple((k, v) for k, v in resp.headers.items())
    except TimeoutError:
        return 0, b"", (), f"{url.host} did not answer within {timeout:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return 0, b"", (), text[:ERROR_MAX]
    if not 200 <= resp.status < 300:
        return resp.status, data, got, f"{url.host} answered {resp.status}"
    return resp.status, data, got, None


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The whole answer, up to MAX_ANSWER_BYTES (a larger one is cut, and fails as JSON)."""
    buf = bytearray()
    while len(buf) < MAX_ANSWER_BYTES:
        chunk = await resp.content.read(MAX_ANSWER_BYTES - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _json(data: bytes) -> Any:
    if not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _latest(raw: list[Any], job: SyncJob) -> list[Any]:
    """One item per id: the last one the source listed (pages list changes in order)."""
    seen: dict[Any, int] = {}
    for n, item in enumerate(raw):
        key = pointer_get(item, job.source.id)
        seen[key if isinstance(key, str | int) and not isinstance(key, bool) else ("#", n)] = n
    return [raw[n] for n in sorted(seen.values())]


def _auth_headers(box: SecretBox, sealed: str | None) -> dict[str, str]:
    """Headers for the external end from the stored (encrypted) auth object."""
    if sealed is None:
        return {}
    secret = orjson.loads(box.decrypt(sealed))
    if "token" in secret:
        return {"Authorization": f"Bearer {secret['token']}"}
    if "password" in secret:
        pair = f"{secret['username']}:{secret['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {str(k): str(v) for k, v in secret.get("headers", {}).items()}
