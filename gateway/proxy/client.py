"""The upstream HTTP client: one pooled ClientSession that forwards headers as they came.

aiohttp adds Accept, Accept-Encoding and User-Agent (and a Content-Type for bodies) to
requests that lack them; a proxy must not, so the session skips them.
"""

from __future__ import annotations

import aiohttp

UPSTREAM_POOL_LIMIT = 1000  # concurrent upstream connections held by the one ClientSession
SKIPPED_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


def upstream_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=UPSTREAM_POOL_LIMIT, limit_per_host=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,  # pass compressed bodies through untouched
        timeout=aiohttp.ClientTimeout(total=None),  # per-route timeouts are set per request
        skip_auto_headers=SKIPPED_AUTO_HEADERS,
    )
