from __future__ import annotations

from conftest import Running, new_session, new_tenant


async def test_create_read_end(server: Running) -> None:
    tenant = await new_tenant(server)
    doc = await new_session(server, tenant["apiKey"], title="Board call")
    async with server.client() as c:
        r = await c.get(f"/api/sessions/{doc['sessionId']}", headers={"x-tenant-key": tenant["apiKey"]})
        assert r.status_code == 200
        assert r.json()["status"] == "live"
        r = await c.delete(f"/api/sessions/{doc['sessionId']}", headers={"x-tenant-key": tenant["apiKey"]})
        assert r.json()["status"] == "ended"
