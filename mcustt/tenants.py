"""Tenants: provisioning, keys (stored hashed, shown once), branding, origins.

The functions take the database handle their callers hold and leave the queries to
:class:`mcustt.store.repo.Repo`.
"""

from __future__ import annotations

import time

from mcustt import wire
from mcustt.config import Settings
from mcustt.errors import Forbidden, NotFound, Unauthorized
from mcustt.store.db import Database
from mcustt.store.models import Tenant
from mcustt.store.repo import Repo
from mcustt.tokens import KEY_PREFIX, digest, new_tenant_key, random_id
from mcustt.wire import ErrorCode, TenantCreate, TenantUpdate


def brand_json(t: Tenant) -> wire.BrandInfo:
    return {
        "brandName": t.brand_name or t.name,
        "accentColor": t.accent_color,
        "logoUrl": t.logo_url,
    }


def tenant_json(t: Tenant) -> wire.Tenant:
    return {
        "tenantId": t.id,
        "name": t.name,
        "maxSessions": t.max_sessions,
        "dailyMinutesCap": t.daily_minutes_cap,
        "brand": brand_json(t),
        "allowedOrigins": list(t.allowed_origins or []),
        "disabled": t.disabled,
        "keyPrefix": t.key_prefix,
        "createdAt": t.created_at,
        "updatedAt": t.updated_at,
        "keywords": list(t.keywords or []),
        "profanityFilter": t.profanity_filter or "off",
    }


def tenant_with_key(t: Tenant, key: str) -> wire.TenantWithKey:
    """The tenant and its new API key: the only answer that ever shows a key."""
    return {**tenant_json(t), "apiKey": key, "note": "shown once"}


def _key_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + 4] + "…"


async def create(db: Database, settings: Settings, body: TenantCreate) -> tuple[Tenant, str]:
    """A new tenant and its API key (returned once, stored as a digest)."""
    key = new_tenant_key()
    now = time.time()
    brand = body.brand
    tenant = Tenant(
        id="tn_" + random_id(16),
        name=body.name,
        key_hash=digest(key),
        key_prefix=_key_prefix(key),
        max_sessions=body.maxSessions or settings.default_max_sessions,
        daily_minutes_cap=(
            body.dailyMinutesCap
            if body.dailyMinutesCap is not None
            else settings.default_daily_minutes_cap
        ),
        brand_name=brand.brandName if brand else None,
        accent_color=brand.accentColor if brand else None,
        logo_url=brand.logoUrl if brand else None,
        allowed_origins=list(body.allowedOrigins or []),
        keywords=wire.merge_keywords(body.keywords),
        profanity_filter=body.profanityFilter,
        created_at=now,
        updated_at=now,
    )
    return await Repo(db).insert_tenant(tenant), key


async def list_all(db: Database) -> list[Tenant]:
    return await Repo(db).list_tenants()


async def get(db: Database, tenant_id: str) -> Tenant:
    tenant = await Repo(db).get_tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return tenant


def _changes(body: TenantUpdate) -> dict[str, object]:
    """The columns a PATCH sets: only the fields it sends (a brand field sent as null
    clears it; one left out keeps its value)."""
    values: dict[str, object] = {}
    if body.name is not None:
        values["name"] = body.name
    if body.maxSessions is not None:
        values["max_sessions"] = body.maxSessions
    if body.dailyMinutesCap is not None:
        values["daily_minutes_cap"] = body.dailyMinutesCap
    if body.brand is not None:
        fields = body.brand.model_fields_set
        if "brandName" in fields:
            values["brand_name"] = body.brand.brandName
        if "accentColor" in fields:
            values["accent_color"] = body.brand.accentColor
        if "logoUrl" in fields:
            values["logo_url"] = body.brand.logoUrl
    if body.allowedOrigins is not None:
        values["allowed_origins"] = list(body.allowedOrigins)
    if body.disabled is not None:
        values["disabled"] = body.disabled
    if body.keywords is not None:
        values["keywords"] = wire.merge_keywords(body.keywords)
    if body.profanityFilter is not None:
        values["profanity_filter"] = body.profanityFilter
    values["updated_at"] = time.time()
    return values


async def update(db: Database, tenant_id: str, body: TenantUpdate) -> Tenant:
    tenant = await Repo(db).update_tenant(tenant_id, _changes(body))
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return tenant


async def rotate_key(db: Database, tenant_id: str) -> tuple[Tenant, str]:
    """Replace the key; the old one stops working at once."""
    key = new_tenant_key()
    changes = {"key_hash": digest(key), "key_prefix": _key_prefix(key), "updated_at": time.time()}
    tenant = await Repo(db).update_tenant(tenant_id, changes)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return tenant, key


async def find(db: Database, tenant_id: str) -> Tenant | None:
    return await Repo(db).get_tenant(tenant_id)


async def authenticate(db: Database, key: str | None) -> Tenant:
    """The tenant whose API key this is.

    Raises:
        Unauthorized: missing or unknown key, or a disabled tenant.
    """
    if not key:
        raise Unauthorized("missing x-tenant-key header", code=ErrorCode.MISSING_TENANT_KEY)
    tenant = await Repo(db).tenant_by_key_hash(digest(key))
    if tenant is None:
        raise Unauthorized("invalid tenant key", code=ErrorCode.INVALID_TENANT_KEY)
    if tenant.disabled:
        raise Unauthorized("this tenant is disabled", code=ErrorCode.TENANT_DISABLED)
    return tenant


def allowed_origins(tenant: Tenant) -> list[str]:
    """The tenant's origins, normalized (:func:`mcustt.wire.normalize_origin`). A row
    stored before origins were validated may hold entries that are not origins (a
    trailing newline, a path, ``;``): they are skipped, so they can neither match nor
    reach a header."""
    valid = []
    for entry in tenant.allowed_origins or []:
        try:
            valid.append(wire.normalize_origin(entry))
        except ValueError:
            continue
    return valid


def _normalized(origin: str) -> str | None:
    try:
        return wire.normalize_origin(origin.rstrip("/"))
    except ValueError:
        return None


def check_origin(tenant: Tenant, origin: str | None, *, own: str | None = None) -> None:
    """Browser-facing endpoints: an ``Origin`` outside the tenant's list gets 403.

    A tenant with no list accepts every origin (captions are meant to be embedded);
    requests without an Origin header (servers, CLIs) are not browsers and pass.
    """
    stored = tenant.allowed_origins or []
    if not origin or not stored or "*" in stored:
        return
    if own is not None and origin.rstrip("/") == own.rstrip("/"):
        return  # our own embed page, calling home
    given = _normalized(origin)
    if given is None or given == "*" or given not in allowed_origins(tenant):
        raise Forbidden(
            f"origin {origin} is not allowed for this tenant", code=ErrorCode.ORIGIN_FORBIDDEN
        )
