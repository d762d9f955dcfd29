"""Random bytes for ids on the request path, from the OS in 4 KiB reads.

Every proxied call needs 26 random bytes (its X-Request-Id and the UUIDv7 of its log row);
one os.urandom call each is a getrandom system call per id. This keeps the same source
(the kernel's CSPRNG) but asks it once per ~150 calls. The buffer is dropped in a forked
child, so two processes never hand out the same bytes. Used from the event loop thread.
"""

from __future__ import annotations

import os

REFILL_BYTES = 4096  # bytes read from the OS at a time


class _Pool:
    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._buf):
            self._buf = os.urandom(max(REFILL_BYTES, n))
            self._pos = 0
        start = self._pos
        self._pos = start + n
        return self._buf[start : self._pos]

    def reset(self) -> None:
        self._buf, self._pos = b"", 0


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.reset)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the kernel's CSPRNG (buffered; never the same bytes twice)."""
    return _POOL.take(n)
