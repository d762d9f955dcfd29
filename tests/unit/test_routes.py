"""routes.yaml parsing and matching (no I/O beyond reading a temp file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError, MethodNotAllowed, RouteNotFound
from gateway.routes import load_routes, parse_routes

GOOD = """
upstreams:
  pms:
    url: http://127.0.0.1:9001/base
routes:
  - name: rooms-feed
    path: /api/rooms/feed
    upstream: pms
  - name: room
    path: /api/rooms/{room_id}
    methods: [get, PUT]
    strip_prefix: /api
    upstream: pms
  - name: files
    path: /files/{rest...}
    methods: [GET]
    host: "*.example.com"
    upstream: pms
"""


def test_repository_routes_file_is_valid() -> None:
    table = load_routes(Path(__file__).parents[2] / "routes.yaml")
    assert {"reservations", "guests", "rooms", "rates", "invoices"} <= {r.name for r in table}


def test_match_params_methods_and_upstream_url() -> None:
    table = parse_routes(GOOD)
    m = table.match("PUT", "/api/rooms/101", "gw:8080")
    assert m.route.name == "room" and m.params == {"room_id": "101"}
    assert (
        str(m.route.upstream_url("/api/rooms/101", "x=1"))
        == "http://127.0.0.1:9001/base/rooms/101?x=1"
    )
    assert table.match("GET", "/api/rooms/feed", None).route.name == "rooms-feed"
    assert table.match("HEAD", "/api/rooms/1", None).route.name == "room"
    files = table.match("GET", "/files/a/b/c.pdf", "cdn.example.com:443")
    assert files.params == {"rest": "a/b/c.pdf"}


def test_upstream_url_never_leaves_the_upstream_origin() -> None:
    """A path whose rest starts with "//" is a path on the upstream, not a network-path
    reference: resolved with URL.join it went to http://evil.example/x (an SSRF)."""
    table = parse_routes(
        "upstreams:\n  pms: {url: 'http://127.0.0.1:9001'}\n"
        "routes:\n  - {name: any, path: '/api/{rest...}', upstream: pms, strip_prefix: /api}\n"
    )
    for raw in ("/api//evil.example/x", "/api///evil.example"):
        route = table.match("GET", raw, None).route
        url = route.upstream_url(raw, "q=1")
        assert (url.host, url.port) == ("127.0.0.1", 9001), url
        assert route.upstream_target(raw, "q=1") == raw.removeprefix("/api") + "?q=1"


def test_no_route_and_wrong_method() -> None:
    table = parse_routes(GOOD)
    with pytest.raises(RouteNotFound):
        table.match("GET", "/api/guests/1", None)
    with pytest.raises(RouteNotFound):  # host does not match
        table.match("GET", "/files/a", "evil.test")
    with pytest.raises(MethodNotAllowed) as exc:
        table.match("DELETE", "/api/rooms/1", None)
    assert exc.value.allowed == ("GET", "PUT")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes: [", "not valid YAML (line 1"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("upstreams: {}\nroutes: []", "field 'upstreams': must be a non-empty mapping"),
        (
            GOOD.replace("methods: [get, PUT]", "methods: [FETCH]"),
            "routes[1] 'room': field 'methods': unknown HTTP method 'FETCH'",
        ),
        (
            GOOD.replace("upstream: pms\n  - name: files", "upstream: nope\n  - name: files"),
            "routes[1] 'room': field 'upstream': unknown upstream 'nope' (known: pms)",
        ),
        (
            GOOD.replace("strip_prefix: /api", "strip_prefix: /other"),
            "routes[1] 'room': field 'strip_prefix'",
        ),
        (
            GOOD.replace("path: /api/rooms/{room_id}", "path: api/rooms"),
            "routes[1] 'room': field 'path': required; must start with '/'",
        ),
        (GOOD.replace("name: files", "name: room"), "routes[2] 'room': field 'name': duplicate"),
        (
            GOOD.replace("    url: http://127.0.0.1:9001/base", "    url: ftp://x"),
            "upstreams.pms: field 'url': must be an absolute http(s) URL",
        ),
        (GOOD + "    timeout: 3\n", "routes[2] 'files': unknown field 'timeout'"),
        (
            GOOD.replace(
                "    url: http://127.0.0.1:9001/base", "    url: http://h\n    read_timeout: -1"
            ),
            "upstreams.pms: field 'read_timeout': must be a number of seconds",
        ),
        (
            GOOD + "    capture: {max_body_bytes: big}\n",
            "routes[2] 'files': field 'capture'.max_body_bytes: must be a non-negative integer",
        ),
        (
            GOOD.replace("/api/rooms/{room_id}", "/api/rooms/{room_id"),
            "field 'path': parameters look like {name}",
        ),
    ],
)
def test_bad_routes_file_names_file_route_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_routes(text, "conf/routes.yaml")
    assert str(exc.value).startswith("conf/routes.yaml: ")
    assert expected in str(exc.value)


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace("methods: [get, PUT]", "methods: [FETCH]").replace(
        'host: "*.example.com"', "host: 5"
    )
    with pytest.raises(ConfigError) as exc:
        parse_routes(text)
    lines = str(exc.value).splitlines()
    assert len(lines) == 2
    assert "'methods'" in lines[0] and "'host'" in lines[1]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read routes file"):
        load_routes(tmp_path / "missing.yaml")
