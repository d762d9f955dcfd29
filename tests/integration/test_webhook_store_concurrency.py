"""Webhook store under concurrency: deleting a subscription while the delivery loop
records results for it does not deadlock (a deadlock would surface as a 500 with
DeadlockDetectedError from the admin API's delete, as in
test_webhooks.py::test_delete_cancels_pending_and_is_audited under load)."""

from __future__ import annotations

import asyncio

import asyncpg
from cryptography.fernet import Fernet

from gateway.auth import keys
from gateway.crypto import SecretBox
from gateway.db.pool import init_connection
from gateway.webhooks import store


async def test_delete_while_a_result_is_recorded_does_not_deadlock(
    db: asyncpg.Connection, database_url: str
) -> None:
    tenant = await keys.create_tenant(db, "Hotel Deadlock", "test")
    box = SecretBox([Fernet.generate_key()])
    values = {
        "name": "d",
        "url": "https://example.com/h",
        "event_types": ["*"],
        "secret": box.encrypt("whsec_x"),
    }
    actor = store.Actor("test", None)
    sub = await store.create_subscription(db, tenant.id, values, actor)
    await db.execute(
        "INSERT INTO webhook_events (tenant_id, event_type, payload) "
        "VALUES ($1, 'room.ready', '{}'::jsonb)",
        tenant.id,
    )
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
    loop_conn = await asyncpg.connect(database_url)
    await init_connection(loop_conn)
    try:
        # What store.complete does: the delivery rows first, then the subscription.
        tx = loop_conn.transaction()
        await tx.start()
        await loop_conn.execute(
            "UPDATE webhook_deliveries SET updated_at = now() WHERE subscription_id = $1", sub.id
        )
        deleting = asyncio.create_task(store.delete_subscription(db, tenant.id, sub.id, actor))
        await asyncio.sleep(0.3)  # the delete is now waiting for a lock the loop holds
        await loop_conn.execute(
            "UPDATE webhook_subscriptions SET updated_at = now() WHERE id = $1", sub.id
        )
        await tx.commit()
        await asyncio.wait_for(deleting, 10)  # a deadlock raises DeadlockDetectedError here
    finally:
        await loop_conn.close()
    status = await db.fetchval("SELECT status FROM webhook_deliveries")
    assert status == "cancelled"
