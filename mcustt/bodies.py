"""Reading a JSON request body into one of :mod:`mcustt.wire`'s models.

Every problem is a 400 ``BAD_REQUEST`` in the contract's envelope that names the field,
so a client sees exactly what to fix.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from mcustt.errors import BadRequest

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 2 * 1024 * 1024


async def read_json(request: Request, *, optional: bool = True) -> dict[str, Any]:
    """The JSON object body; an empty body is ``{}`` when ``optional``."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"body larger than {MAX_BODY} bytes")
    if not raw.strip():
        if optional:
            return {}
        raise BadRequest("a JSON body is required")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object")
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
