"""Types of the C extension gateway._idscan (gateway/_idscan.c)."""

from collections.abc import Sequence

class Program:
    def __init__(
        self,
        nodes: Sequence[tuple[bool, int | None, Sequence[tuple[bytes, int, int]]]],
        leaves: int,
    ) -> None: ...
    def scan(self, body: bytes) -> tuple[list[list[str]], bytes] | None: ...

def splice(body: bytes, spans: bytes, news: list[list[str | None]]) -> bytes: ...
