"""Pure logic of the REST puller: page envelopes, cursor records, config validation, the stand-in's cursors."""

from __future__ import annotations

import orjson
import pytest

from connectors.properties import ConfigError
from connectors.rest_pull.cursors import CursorState, CursorStoreError, decode_cursor, encode_cursor
from connectors.rest_pull.page import PageRefused, page_digest, parse_page
from infra.local.pull_api.rules import CursorInvalid, issue_cursor, read_cursor
from jobs.rest_pull import load_pull_config

PHI_LIKE = "Jane Q Public 1970-01-01"


def groups(**pull: str) -> dict[str, dict[str, str]]:
    base = {"feeds": "f1", "f1.url": "http://127.0.0.1:1/v1/records", "f1.secret": "s1"}
    return {"rest_pull": {**base, **pull}, "kafka": {"bootstrap.servers": "127.0.0.1:19092"}, "feeds": {}}


def test_page_records_become_messages_keyed_by_record_id() -> None:
    page = parse_page(orjson.dumps({"records": [{"record_id": "r1", "x": 1}, [1, 2]], "next_cursor": "c2"}))
    assert page.messages == ((b"r1", b'{"record_id":"r1","x":1}'), (None, b"[1,2]"))
    assert page.next_cursor == "c2" and page.digest == page_digest([b'{"record_id":"r1","x":1}', b"[1,2]"])
    assert parse_page(b'{"records":[{"a":1}],"next_cursor":"c"}', lines=True).messages[0][1] == b'{"a":1}\n'


def test_empty_page_may_omit_the_cursor() -> None:
    page = parse_page(b'{"records":[]}')
    assert page.empty and page.next_cursor is None


@pytest.mark.parametrize(("body", "reason"), [
    (b"<html>" + PHI_LIKE.encode(), "page_not_json"),
    (orjson.dumps([{"name": PHI_LIKE}]), "page_not_an_object"),
    (orjson.dumps({"data": [{"name": PHI_LIKE}]}), "page_records_not_a_list"),
    (orjson.dumps({"records": [{"name": PHI_LIKE}]}), "page_next_cursor_missing"),
    (orjson.dumps({"records": [], "next_cursor": 7}), "page_next_cursor_invalid"),
    (orjson.dumps({"records": [], "next_cursor": "x" * 5000}), "page_next_cursor_invalid"),
])
def test_malformed_envelopes_refused_without_content(body: bytes, reason: str) -> None:
    with pytest.raises(PageRefused) as refused:
        parse_page(body)
    assert refused.value.reason == reason and PHI_LIKE not in str(refused.value)


def test_cursor_records_round_trip_and_advance() -> None:
    state = CursorState("f1").after("c1", 10, "d1", 5.0).after(None, 0, "d2", 6.0)
    assert (state.page, state.total, state.records, state.cursor) == (2, 10, 0, None)
    assert decode_cursor(*encode_cursor(state)) == state


@pytest.mark.parametrize("value", [b"nope", b"[]", b'{"v":2}', b'{"v":1,"feed":"f2","cursor":null}',
                                   b'{"v":1,"feed":"f1","cursor":null,"page":-1,"records":0,"total":0,"digest":""}',
                                   b'{"v":1,"feed":"f1","cursor":3,"page":1,"records":0,"total":0,"digest":""}'])
def test_bad_cursor_records_refused(value: bytes) -> None:
    with pytest.raises(CursorStoreError):
        decode_cursor(b"f1", value)


def test_config_defaults_and_token_url() -> None:
    cfg = load_pull_config(groups())
    feed = cfg.feeds[0]
    assert (feed.name, feed.page_size, feed.raw_topic) == ("f1", 100, "raw.f1")
    assert feed.token_url == "http://127.0.0.1:1/oauth2/token"
    assert (cfg.cursor_topic, cfg.interval_s) == ("medistream.pull.cursors", 60.0)
    assert load_pull_config({**groups(), "rest_pull": {"feeds": ""}}).feeds == ()


@pytest.mark.parametrize(("pull", "key"), [
    ({"f1.url": "http://partner.example/v1"}, "rest_pull.f1.url"),
    ({"f1.url": "ftp://127.0.0.1/x"}, "rest_pull.f1.url"),
    ({"f1.secret": ""}, "rest_pull.f1.secret"),
    ({"f1.page.size": "0"}, "rest_pull.f1.page.size"),
    ({"interval.s": "-1"}, "rest_pull.interval.s"),
    ({"f2.url": "http://127.0.0.1:1/x"}, "rest_pull.f2.url"),
    ({"feeds": "f1,f1"}, "rest_pull.feeds"),
])
def test_config_errors_name_the_key(pull: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_pull_config(groups(**pull))


def test_standin_cursors_are_opaque_and_signed() -> None:
    key, other = b"k" * 32, b"o" * 32
    cursor = issue_cursor(key, 1234)
    assert "1234" not in cursor and read_cursor(key, cursor) == 1234
    for forged in (issue_cursor(other, 1234), cursor[:-2], "!!", cursor[:-1] + ("A" if cursor[-1] != "A" else "B")):
        with pytest.raises(CursorInvalid):
            read_cursor(key, forged)
