"""Small helpers for the gateway's background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def finish_within(task: asyncio.Task[Any], timeout: float) -> bool:
    """Give ``task`` up to ``timeout`` seconds to end by itself, else cancel it and wait
    for the cancellation. True when it ended in time."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    return True
