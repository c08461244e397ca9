"""Tenant rows: inserted once, read by id or by key digest, changed in place."""

from __future__ import annotations

from collections.abc import Mapping

from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import Tenant


class TenantQueries:
    db: Database

    async def insert_tenant(self, tenant: Tenant) -> Tenant:
        async with self.db.session() as s:
            s.add(tenant)
            await s.commit()
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        """Every tenant, oldest first."""
        async with self.db.session() as s:
            rows = await s.exec(select(Tenant).order_by(col(Tenant.created_at)))
            return list(rows.all())

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self.db.session() as s:
            return await s.get(Tenant, tenant_id)

    async def tenant_by_key_hash(self, key_hash: str) -> Tenant | None:
        async with self.db.session() as s:
            rows = await s.exec(select(Tenant).where(Tenant.key_hash == key_hash))
            return rows.first()

    async def update_tenant(self, tenant_id: str, values: Mapping[str, object]) -> Tenant | None:
        """Set the given attributes (model field names) on the row, in one transaction;
        None when there is no such tenant."""
        async with self.db.session() as s:
            tenant = await s.get(Tenant, tenant_id)
            if tenant is None:
                return None
            for name, value in values.items():
                if name not in Tenant.model_fields:
                    raise AttributeError(f"Tenant has no field {name!r}")
                setattr(tenant, name, value)
            s.add(tenant)
            await s.commit()
            return tenant
