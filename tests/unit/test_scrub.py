"""Erasure matching (gateway/scrub.py): ids as whole tokens, values as case-insensitive
substrings, in JSON, query strings, paths and text."""

from __future__ import annotations

import re

from gateway.scrub import ERASED, Needles, Scrubber

IDS = Scrubber(Needles.of(ids=["BE-5521-77", "5521", "c3d4e5f6-1111-4222-8333-444455556666"]))
EMAIL = Scrubber(Needles.of(values=["ada@example.com"]))


def test_ids_are_whole_tokens() -> None:
    assert IDS.text("guest BE-5521-77 arrives") == (f"guest {ERASED} arrives", 1)
    assert IDS.text("BE-5521-78 and 155210 and BE-5521") == ("BE-5521-78 and 155210 and BE-5521", 0)
    assert IDS.text('{"id":"5521"}') == (f'{{"id":"{ERASED}"}}', 1)


def test_json_strings_keys_and_numbers() -> None:
    body = {"guest": {"id": 5521, "ref": "BE-5521-77", "n": 55210, "ok": True}, "5521": [1.0]}
    new, n = IDS.json(body)
    assert new == {"guest": {"id": ERASED, "ref": ERASED, "n": 55210, "ok": True}, ERASED: [1.0]}
    assert n == 3


def test_values_are_case_insensitive_substrings() -> None:
    assert EMAIL.json({"to": "Mail ADA@Example.com now"}) == ({"to": f"Mail {ERASED} now"}, 1)
    assert EMAIL.text("bob@example.com") == ("bob@example.com", 0)


def test_query_and_path_are_matched_decoded() -> None:
    query, n = EMAIL.query("email=ada%40example.com&x=1")
    assert n == 1 and query == "email=[ERASED]&x=1"
    path, n = IDS.path("/guests/BE-5521-77/stays")
    assert n == 1 and path == "/guests/[ERASED]/stays"
    assert IDS.path("/guests/BE-5521-78") == ("/guests/BE-5521-78", 0)


def test_like_patterns_cover_json_and_percent_encoded_forms() -> None:
    patterns = Needles.of(values=['a"b_c%d@e']).like_patterns()
    assert '%a\\\\"b\\_c\\%d@e%' in patterns  # JSON-escaped quote, LIKE-escaped _ and %
    assert any("%40" in p for p in patterns)


def test_no_needles_match_nothing() -> None:
    empty = Needles.of()
    assert not empty and empty.count == 0
    assert Scrubber(empty).text("anything") == ("anything", 0)
    assert isinstance(empty.pattern(), re.Pattern)
