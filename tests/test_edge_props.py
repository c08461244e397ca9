"""Properties of the edge's parsers (issue 12), over generated input: a body either
parses to a document every database can store or is a 400; an origin either normalizes
to exactly scheme://host[:port] or is refused."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from mcustt.bodies import read_json
from mcustt.errors import BadRequest
from mcustt.wire import ORIGIN_PATTERN, UNSTORABLE_TEXT, normalize_origin


def _request(body: bytes) -> Request:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


def _parse(body: bytes) -> dict[str, Any] | BadRequest:
    try:
        return asyncio.run(read_json(_request(body)))
    except BadRequest as exc:
        return exc


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _storable(doc: dict[str, Any]) -> None:
    json.dumps(doc, allow_nan=False)  # no NaN/Infinity reaches a JSON column
    assert not any(UNSTORABLE_TEXT.search(s) for s in _strings(doc))


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_a_json_body_parses_to_storable_data_or_is_400(value: Any) -> None:
    raw = json.dumps({"v": value}).encode()  # Python writes NaN, Infinity, \u0000…
    result = _parse(raw)
    if isinstance(result, dict):
        _storable(result)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_a_document_or_400(raw: bytes) -> None:
    result = _parse(raw)
    if isinstance(result, dict):
        _storable(result)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=5000), st.sampled_from(["[", '{"a":']))
def test_any_nesting_is_a_document_or_400(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = ('{"v":' + opener * depth + "1" + closer * depth + "}").encode()
    result = _parse(raw)
    assert isinstance(result, dict) == (depth < 64)


origin_like = st.builds(
    lambda scheme, host, port, tail: f"{scheme}://{host}{port}{tail}",
    st.sampled_from(["http", "https", "HTTPS", "ftp", "javascript"]),
    st.text(min_size=1, max_size=30),
    st.sampled_from(["", ":8080", ":443", ":0", ":99999", ":x"]),
    st.sampled_from(["", "/", "\n", "; script-src *", "'", " ", "/path"]),
)


@settings(max_examples=150, deadline=None)
@given(origin_like | st.text(max_size=60))
def test_an_origin_normalizes_to_scheme_host_port_or_is_refused(value: str) -> None:
    try:
        normalized = normalize_origin(value)
    except ValueError as exc:
        assert repr(value) in str(exc)  # the 400 names the entry
        return
    assert re.fullmatch(ORIGIN_PATTERN, normalized), normalized
    assert normalized.isascii() and not re.search(r"[\s;,'\"]", normalized)
    assert normalize_origin(normalized) == normalized  # stored values stay valid
