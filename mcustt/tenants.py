"""Tenants: provisioning, keys (stored hashed, shown once), branding, origins."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import col, select

from mcustt.config import Settings
from mcustt.errors import Forbidden, NotFound, Unauthorized
from mcustt.schemas import TenantCreate, TenantUpdate
from mcustt.store.db import Database
from mcustt.store.models import Tenant
from mcustt.tokens import KEY_PREFIX, digest, new_tenant_key, random_id


def brand_json(t: Tenant) -> dict[str, Any]:
    return {
        "brandName": t.brand_name or t.name,
        "accentColor": t.accent_color,
        "logoUrl": t.logo_url,
    }


def tenant_json(t: Tenant) -> dict[str, Any]:
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
    }


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
        created_at=now,
        updated_at=now,
    )
    async with db.session() as s:
        s.add(tenant)
        await s.commit()
    return tenant, key


async def list_all(db: Database) -> list[Tenant]:
    async with db.session() as s:
        rows = await s.exec(select(Tenant).order_by(col(Tenant.created_at)))
        return list(rows.all())


async def get(db: Database, tenant_id: str) -> Tenant:
    async with db.session() as s:
        tenant = await s.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return tenant


async def update(db: Database, tenant_id: str, body: TenantUpdate) -> Tenant:
    async with db.session() as s:
        tenant = await s.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        if body.name is not None:
            tenant.name = body.name
        if body.maxSessions is not None:
            tenant.max_sessions = body.maxSessions
        if body.dailyMinutesCap is not None:
            tenant.daily_minutes_cap = body.dailyMinutesCap
        if body.brand is not None:
            fields = body.brand.model_fields_set
            if "brandName" in fields:
                tenant.brand_name = body.brand.brandName
            if "accentColor" in fields:
                tenant.accent_color = body.brand.accentColor
            if "logoUrl" in fields:
                tenant.logo_url = body.brand.logoUrl
        if body.allowedOrigins is not None:
            tenant.allowed_origins = list(body.allowedOrigins)
        if body.disabled is not None:
            tenant.disabled = body.disabled
        tenant.updated_at = time.time()
        s.add(tenant)
        await s.commit()
        return tenant


async def rotate_key(db: Database, tenant_id: str) -> tuple[Tenant, str]:
    """Replace the key; the old one stops working at once."""
    key = new_tenant_key()
    async with db.session() as s:
        tenant = await s.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        tenant.key_hash = digest(key)
        tenant.key_prefix = _key_prefix(key)
        tenant.updated_at = time.time()
        s.add(tenant)
        await s.commit()
        return tenant, key


async def find(db: Database, tenant_id: str) -> Tenant | None:
    async with db.session() as s:
        return await s.get(Tenant, tenant_id)


async def authenticate(db: Database, key: str | None) -> Tenant:
    """The tenant whose API key this is.

    Raises:
        Unauthorized: missing or unknown key, or a disabled tenant.
    """
    if not key:
        raise Unauthorized("missing x-tenant-key header", code="MISSING_TENANT_KEY")
    async with db.session() as s:
        rows = await s.exec(select(Tenant).where(Tenant.key_hash == digest(key)))
        tenant = rows.first()
    if tenant is None:
        raise Unauthorized("invalid tenant key", code="INVALID_TENANT_KEY")
    if tenant.disabled:
        raise Unauthorized("this tenant is disabled", code="TENANT_DISABLED")
    return tenant


def check_origin(tenant: Tenant, origin: str | None, *, own: str | None = None) -> None:
    """Browser-facing endpoints: an ``Origin`` outside the tenant's list gets 403.

    A tenant with no list accepts every origin (captions are meant to be embedded);
    requests without an Origin header (servers, CLIs) are not browsers and pass.
    """
    allowed = tenant.allowed_origins or []
    if not origin or not allowed or "*" in allowed:
        return
    if own is not None and origin.rstrip("/") == own.rstrip("/"):
        return  # our own embed page, calling home
    if origin.rstrip("/") not in {a.rstrip("/") for a in allowed}:
        raise Forbidden(f"origin {origin} is not allowed for this tenant", code="ORIGIN_FORBIDDEN")
