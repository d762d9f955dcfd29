"""A pytest plugin that runs asyncio tests on uvloop (the gateway's loop) instead of the
default one: ``pytest -p tests.integration.uvloop_loops ...``. The upstream pool's
conformance tests run once more under it (test_upstream_client.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], object]]:
    return {"uvloop": uvloop.new_event_loop}
