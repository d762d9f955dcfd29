"""A sync job runner in a process of its own, as a gateway worker runs it:
``python -m tests.integration.sync_job_worker DSN BASE_URL TENANT BOX_KEY``. It runs the
outbound job of test_sync_jobs.py until nothing is due; the test kills it with SIGKILL."""

from __future__ import annotations

import asyncio
import sys
import uuid

from gateway.crypto import SecretBox
from gateway.db.pool import create_pool
from gateway.mapping.batch import batch_translator
from gateway.mapping.cache import MappingCache
from gateway.mapping.flow import Mappings
from gateway.proxy.client import upstream_session
from gateway.sync.jobs.runner import Hands, JobRunner
from gateway.webhooks.delivery import webhook_session
from gateway.webhooks.ssrf import AddressPolicy, literal_refusal
from tests.integration.test_sync_jobs import job_config

LEASE = 1.0  # seconds: the test waits this long for the killed runner's lease to expire


async def main(dsn: str, base: str, tenant: str, key: str) -> None:
    job = job_config(base, uuid.UUID(tenant), "outbound")
    pool = await create_pool(dsn, 1, 4)
    policy = AddressPolicy(allow_private=True)
    hands = Hands(
        upstream_session(),
        webhook_session(policy),
        lambda url: literal_refusal(url, policy),
        batch_translator(Mappings(pool, MappingCache(), 30.0)),
    )
    runner = JobRunner(pool, [job], SecretBox([key.encode()]), hands, lease=LEASE)
    print("ready", flush=True)
    await runner.run_due()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
