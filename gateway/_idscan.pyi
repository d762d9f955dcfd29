"""Types of the C extension gateway._idscan (gateway/_idscan.c)."""

from collections.abc import Mapping, Sequence
from typing import overload

class Program:
    def __init__(
        self,
        nodes: Sequence[tuple[bool, int | None, Sequence[tuple[bytes, int, int]]]],
        leaves: int,
    ) -> None: ...
    @overload
    def scan(self, body: bytes) -> tuple[list[list[str]], bytes] | None: ...
    @overload
    def scan(
        self, body: bytes, views: list[Mapping[str, str]]
    ) -> tuple[list[list[str]], bytes, list[list[str | None]], list[int], bytes | None] | None: ...

def splice(body: bytes, spans: bytes, news: list[list[str | None]]) -> bytes: ...
