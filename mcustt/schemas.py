"""Request bodies, validated with pydantic (SQLModel's own dependency).

Validation problems become 400 BAD_REQUEST in the contract's envelope, naming the
field, so a client sees exactly what to fix.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request

from mcustt.errors import BadRequest

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 2 * 1024 * 1024
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Brand(Body):
    brandName: Annotated[str, Field(max_length=200)] | None = None
    accentColor: str | None = None
    logoUrl: Annotated[str, Field(max_length=2000)] | None = None

    @field_validator("accentColor")
    @classmethod
    def _color(cls, v: str | None) -> str | None:
        if v is not None and not _COLOR.match(v):
            raise ValueError("must be a CSS hex colour such as #0b5 or #00bb55")
        return v

    @field_validator("logoUrl")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return v


def _origins(v: list[str] | None) -> list[str] | None:
    if v is None:
        return v
    for origin in v:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ValueError(f"{origin!r} is not an origin like https://example.com or *")
    return v


class TenantCreate(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    maxSessions: Annotated[int, Field(ge=1, le=100_000)] | None = None
    dailyMinutesCap: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    brand: Brand | None = None
    allowedOrigins: list[str] | None = None

    _check_origins = field_validator("allowedOrigins")(_origins)


class TenantUpdate(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    maxSessions: Annotated[int, Field(ge=1, le=100_000)] | None = None
    dailyMinutesCap: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    brand: Brand | None = None
    allowedOrigins: list[str] | None = None
    disabled: bool | None = None

    _check_origins = field_validator("allowedOrigins")(_origins)


def _lang(v: str | None) -> str | None:
    if v is not None and not _LANG.match(v):
        raise ValueError("must be a BCP-47 language code such as en-US")
    return v


class SessionCreate(Body):
    title: Annotated[str, Field(max_length=500)] | None = None
    sourceLang: str | None = None
    autoDetect: bool = True

    _check_lang = field_validator("sourceLang")(_lang)


class OwnerSecretBody(Body):
    ownerSecret: str | None = None


class SummarizeBody(OwnerSecretBody):
    fromSeq: Annotated[int, Field(ge=0)] | None = None
    toSeq: Annotated[int, Field(ge=0)] | None = None


class Subtitle(Body):
    text: Annotated[str, Field(max_length=20_000)]
    ts: float | None = None
    speaker: Annotated[str, Field(max_length=64)] | None = None


class BatchRequest(Body):
    subtitles: Annotated[list[Subtitle], Field(max_length=100_000)] | None = None
    text: Annotated[str, Field(max_length=2_000_000)] | None = None
    sourceLang: str | None = None
    want: list[str] = Field(default_factory=lambda: ["summary"])

    _check_lang = field_validator("sourceLang")(_lang)

    @field_validator("want")
    @classmethod
    def _want(cls, v: list[str]) -> list[str]:
        bad = [w for w in v if w not in {"summary", "transcript"}]
        if bad or not v:
            raise ValueError("want lists 'summary' and/or 'transcript'")
        return v


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
