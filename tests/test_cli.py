"""The ``mcustt`` command as an operator runs it: migrate, then manage tenants, with the
printed keys working (or not) against a server on the same database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import make_settings, run_server
from rest_helpers import client, error_of

KEY = re.compile(r"sk_mcustt_[A-Za-z0-9_-]{43,}")


@dataclass
class Result:
    code: int
    out: str
    err: str


async def mcustt(db_url: str, *args: str) -> Result:
    env = os.environ | {"MCUSTT_DATABASE_URL": db_url, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcustt",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def test_tenant_lifecycle_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/var/cli.db"  # the folder does not exist yet
    unmigrated = f"sqlite:///{tmp_path}/other.db"

    # Before `migrate`, tenant commands refuse and say what to do.
    refused, done = await asyncio.gather(
        mcustt(unmigrated, "tenants", "create", "Acme", "--json"), mcustt(url, "migrate")
    )
    assert refused.code != 0
    assert "mcustt migrate" in refused.err
    assert not KEY.search(refused.out + refused.err)
    assert done.code == 0, done.err
    assert "database at revision" in done.out

    created, plain = await asyncio.gather(
        mcustt(
            url, "tenants", "create", "Acme", "--json", "--max-sessions", "5",
            "--accent-color", "#0b5",
        ),
        mcustt(url, "tenants", "create", "Beta"),
    )  # fmt: skip
    assert created.code == 0, created.err
    acme = json.loads(created.out)
    key = acme["apiKey"]
    assert KEY.fullmatch(key)
    assert acme["maxSessions"] == 5 and acme["brand"]["accentColor"] == "#0b5"
    # Plain output: the key alone on a line, so it copies cleanly.
    assert plain.code == 0, plain.err
    beta_key = next(line for line in plain.out.splitlines() if KEY.fullmatch(line))

    # Listing shows tenants, never keys: only a prefix that tells them apart.
    listed = await mcustt(url, "tenants", "list")
    assert listed.code == 0, listed.err
    rows = [line for line in listed.out.splitlines() if acme["tenantId"] in line]
    assert len(rows) == 1 and "Acme" in rows[0]
    assert key[:14] in rows[0]  # sk_mcustt_ and four characters
    assert beta_key[:14] in listed.out
    assert key not in listed.out and beta_key not in listed.out
    assert not KEY.search(listed.out)

    rotated = await mcustt(url, "tenants", "rotate-key", acme["tenantId"], "--json")
    assert rotated.code == 0, rotated.err
    new_key = json.loads(rotated.out)["apiKey"]
    assert KEY.fullmatch(new_key) and new_key != key

    async with run_server(make_settings(url)) as srv, client(srv) as c:
        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": key})
        error_of(r, 401, "INVALID_TENANT_KEY")
        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": new_key})
        assert r.status_code == 201, r.text
        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": beta_key})
        assert r.status_code == 201, r.text

        # Disabling from the CLI takes effect on the running server at once.
        disabled = await mcustt(url, "tenants", "disable", acme["tenantId"])
        assert disabled.code == 0, disabled.err
        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": new_key})
        error_of(r, 401, "TENANT_DISABLED")
        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": beta_key})
        assert r.status_code == 201, r.text
