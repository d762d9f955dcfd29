"""One erasure: check the request, resolve the subject's ids, run every store's erase
step, audit what was done (counts only, never the values)."""

from __future__ import annotations

import uuid

import asyncpg

from gateway.audit import audit
from gateway.erasure.model import ErasureRequest, ErasureResult, Steps, TableCount
from gateway.errors import Invalid
from gateway.scrub import MAX_NEEDLES, Needles

AUDIT_ACTION = "subject.erase"


def check(req: ErasureRequest) -> None:
    """Exactly one way of naming the subject (422 ``invalid_erasure`` otherwise)."""
    by_entity = req.entity_type is not None or req.id is not None
    if by_entity == (req.value is not None):
        raise Invalid("give either entity_type and id, or value", code="invalid_erasure")
    if by_entity and (req.entity_type is None or req.id is None):
        raise Invalid("entity_type and id go together", code="invalid_erasure")
    if req.external_system is not None and not by_entity:
        raise Invalid("external_system goes with entity_type and id", code="invalid_erasure")
    if "\x00" in (req.id or "") + (req.value or ""):
        raise Invalid("id and value cannot contain NUL characters", code="invalid_erasure")


async def needles(
    control: asyncpg.Pool, steps: Steps, tenant_id: uuid.UUID, req: ErasureRequest
) -> Needles:
    if req.value is not None:
        return Needles.of(values=[req.value])
    assert req.entity_type is not None and req.id is not None
    async with control.acquire() as conn:
        ids = await steps.resolve(conn, tenant_id, req.entity_type, req.id, req.external_system)
    if len(ids) > MAX_NEEDLES:
        raise Invalid(f"the subject has more than {MAX_NEEDLES} ids", code="invalid_erasure")
    return Needles.of(ids=ids)


async def erase(
    control: asyncpg.Pool,
    steps: Steps,
    tenant_id: uuid.UUID,
    req: ErasureRequest,
    *,
    actor: str,
    actor_key_id: uuid.UUID | None = None,
) -> ErasureResult:
    """Run one erasure of the tenant's data; audited unless a dry run."""
    check(req)
    found = await needles(control, steps, tenant_id, req)
    counts: list[TableCount] = []
    for step in steps.erase:
        counts += [
            TableCount(e.table, e.rows, e.batches)
            for e in await step(tenant_id, found, req.dry_run)
        ]
    result = ErasureResult(
        erasure_id=uuid.uuid4(),
        dry_run=req.dry_run,
        identifiers=found.count,
        rows=sum(c.rows for c in counts),
        tables=counts,
    )
    if not req.dry_run:
        async with control.acquire() as conn:
            await audit(
                conn,
                actor=actor,
                actor_key_id=actor_key_id,
                tenant_id=tenant_id,
                action=AUDIT_ACTION,
                object_type="data_subject",
                object_id=str(result.erasure_id),  # never the erased id or value
                after={
                    "by": "value" if req.value is not None else "entity",
                    "entity_type": req.entity_type,
                    "external_system": req.external_system,
                    "identifiers": result.identifiers,
                    "rows": result.rows,
                    "tables": {c.table: c.rows for c in counts},
                },
            )
    return result
