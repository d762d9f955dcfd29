"""routes.yaml `translate` blocks: parsed into Translation, every problem named."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.routes import parse_routes

HEAD = """
upstreams:
  pms: http://127.0.0.1:9001
routes:
  - name: res
    path: /r/{rid}
    methods: [GET, POST]
    upstream: pms
"""


def test_translate_block_is_parsed() -> None:
    table = parse_routes(
        HEAD
        + """    translate:
      path: {rid: reservation}
      query: {guest: guest}
      body: {/guest_id: guest}
      request_body: {/items/*/room_id: room}
      response_body: {/id: reservation}
      on_unknown: pass
      unknown_status: 404
      auto_map: {entity_type: reservation, external_id: /ref, internal_id: /id}
"""
    )
    tr = table.routes[0].translate
    assert tr is not None
    assert tr.path_params == (("rid", "reservation"),)
    assert tr.request_fields == (("/guest_id", "guest"), ("/items/*/room_id", "room"))
    assert tr.response_fields == (("/guest_id", "guest"), ("/id", "reservation"))
    assert not tr.refuse_unknown and tr.unknown_status == 404
    assert tr.auto_map is not None and tr.auto_map.statuses == frozenset({201})
    assert set(tr.request_trie) == {"guest_id", "items"}


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("path: {nope: reservation}", "field 'translate'.path.nope: no parameter {nope}"),
        ("path: {rid: Reservation}", "entity type must look like"),
        ("body: {guest_id: guest}", "field 'translate'.body.guest_id: pointer must start"),
        ("body: {/a: x, /a/b: y}", "goes inside pointer"),
        ("on_unknown: ignore", "must be refuse or pass"),
        ("unknown_status: 400", "must be 404 or 422"),
        ("auto_map: {entity_type: r, external_id: /x/*, internal_id: /id}", "no '*'"),
        ("auto_map: {entity_type: r, internal_id: /id}", "auto_map.external_id: required"),
        ("auto_map: {entity_type: r, external_id: /x, internal_id: /id, statuses: [500]}", "2xx"),
        ("colour: blue", "unknown field 'colour'"),
    ],
)
def test_bad_translate_blocks_name_file_route_and_field(block: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_routes(HEAD + "    translate:\n      " + block + "\n", "routes.yaml")
    text = str(exc.value)
    assert text.startswith("routes.yaml: routes[0] 'res': field 'translate'"), text
    assert message in text, text


def test_translated_routes_cannot_be_public() -> None:
    with pytest.raises(ConfigError, match="needs a partner key"):
        parse_routes(HEAD + "    public: true\n    translate:\n      path: {rid: reservation}\n")
