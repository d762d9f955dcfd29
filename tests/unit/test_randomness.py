"""Buffered randomness: never repeats, and a forked child does not reuse the parent's."""

from __future__ import annotations

import os

from gateway.randomness import REFILL_BYTES, random_bytes


def test_bytes_never_repeat_across_refills() -> None:
    seen = {random_bytes(16) for _ in range(3 * REFILL_BYTES // 16)}
    assert len(seen) == 3 * REFILL_BYTES // 16
    assert len(random_bytes(REFILL_BYTES * 2)) == REFILL_BYTES * 2


def test_a_forked_child_gets_its_own_bytes() -> None:
    random_bytes(16)  # the parent has a partly used buffer now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it would hand out next, then leave at once
        os.write(write, random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != random_bytes(16)
