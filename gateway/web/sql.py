"""SQL building blocks for the admin endpoints' filtered, paged lists."""

from __future__ import annotations

from typing import Any


class Where:
    """WHERE clauses with numbered parameters, built one filter at a time."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def add(self, sql: str, *values: Any) -> None:
        """``sql`` uses {} for each value, in order."""
        marks = []
        for v in values:
            self.args.append(v)
            marks.append(f"${len(self.args)}")
        self.clauses.append(sql.format(*marks))

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses)
