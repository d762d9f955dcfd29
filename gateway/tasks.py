"""Small helpers for the gateway's background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

CANCEL_GRACE = 1.0  # seconds a cancelled task may take to unwind before it is abandoned


async def finish_within(task: asyncio.Task[Any], timeout: float) -> bool:
    """Give ``task`` up to ``timeout`` seconds to end by itself, else cancel it and give it
    ``CANCEL_GRACE`` seconds to unwind. A task stuck even then (its cleanup waits on a hung
    database, say) is abandoned, never awaited forever. True when it ended in time."""
    try:
        await asyncio.wait_for(asyncio.shield(task), max(timeout, 0.0))
    except TimeoutError:
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()  # retrieved, so asyncio does not log it as never retrieved
        return False
    return True


async def run_within(step: Coroutine[Any, Any, Any], timeout: float) -> bool:
    """Run a shutdown step for at most ``timeout`` seconds (then it is cancelled and, if it
    will not even unwind, abandoned); True when it finished by itself."""
    return await finish_within(asyncio.create_task(step), timeout)
