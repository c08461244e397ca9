"""Reading a JSON request body into one of :mod:`mcustt.wire`'s models.

Every problem is a 400 ``BAD_REQUEST`` in the contract's envelope that names the field,
so a client sees exactly what to fix. The body's size is capped before it gets here
(:mod:`mcustt.edge`, while it is read); here the parsed document is held to what every
database can store: no ``NaN``/``Infinity`` (PostgreSQL's JSON refuses them), no NUL
or lone surrogate in any string (PostgreSQL's text refuses the one, UTF-8 the other),
and a bounded nesting depth (the parser would otherwise recurse until Python stops it).
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from mcustt.errors import BadRequest, PayloadTooLarge
from mcustt.wire import UNSTORABLE_TEXT

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 2 * 1024 * 1024
#: Nesting deeper than any request body needs (theirs is 3: body, list, item).
MAX_DEPTH = 64


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise ValueError(f"{text[:40]} is out of range")
    return value


def loads(raw: str | bytes) -> Any:
    """Strict JSON, or 400 BAD_REQUEST: ``NaN``/``Infinity`` and numbers that overflow
    to them are refused (a PostgreSQL JSON column and strict parsers refuse them), and
    nesting too deep for the parser or an integer past its digit limit is a 400 rather
    than an error that escapes. Used for request bodies and control messages alike."""
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadRequest("malformed JSON: nested deeper than the parser allows") from None
    except (ValueError, UnicodeDecodeError) as exc:  # and int() past its digit limit
        raise BadRequest(f"malformed JSON: {exc}") from None


def _check_document(data: Any) -> None:
    """Depth and storable strings, iteratively (the depth is not bounded yet)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if UNSTORABLE_TEXT.search(node):
                raise BadRequest(
                    "a string in the body holds a NUL character or a lone surrogate, "
                    "which cannot be stored"
                )
        elif isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise BadRequest(f"the JSON body is nested deeper than {MAX_DEPTH} levels")
            items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            stack.extend((item, depth + 1) for item in items)


async def read_json(request: Request, *, optional: bool = True) -> dict[str, Any]:
    """The JSON object body; an empty body is ``{}`` when ``optional``."""
    raw = await request.body()
    if len(raw) > MAX_BODY:  # the edge caps every body; this keeps the rule local too
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        if optional:
            return {}
        raise BadRequest("a JSON body is required")
    data = loads(raw)
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object")
    _check_document(data)
    return data


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        raise BadRequest(f"invalid body: {problems}") from None


async def parse_body(request: Request, model: type[M], *, optional: bool = True) -> M:
    return validate(model, await read_json(request, optional=optional))
