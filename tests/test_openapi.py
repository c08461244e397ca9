"""The OpenAPI document: valid OpenAPI 3.1, served with a readable page, and true of the
live server (schemathesis fuzzes every operation and checks each answer against it)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from conftest import ADMIN, make_settings, read_wav, run_server
from openapi_spec_validator import validate
from rest_helpers import client, create_session, create_tenant
from wsclients import producer, stream_pcm

from mcustt import openapi
from mcustt.app import create_app

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


PHASES = "examples,coverage,fuzzing,stateful"
#: On the second database the input-only phases would repeat what the first found (and
#: tests/test_properties.py fuzzes inputs on both); the stateful one exercises its
#: storage along the document's links.
PHASES_AGAIN = "examples,stateful"


def stateful_scenarios(report: str) -> int:
    """How many scenarios the stateful phase ran (its summary's ``Scenarios: N``)."""
    found = re.findall(r"Scenarios:\s+(\d+)", report)
    assert found, "the report has no stateful phase:\n" + report[-5000:]
    return sum(int(n) for n in found)


def _route_operations() -> set[tuple[str, str]]:
    """(method, path) of every HTTP route the app serves, in OpenAPI's path syntax."""
    from starlette.routing import Route

    app = create_app(make_settings("sqlite:///unused.db"), configure_logs=False)
    found = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            for method in route.methods - {"HEAD"}:
                found.add((method.lower(), route.path))
    return found


def test_document_is_valid_openapi_31_and_covers_every_route() -> None:
    doc = openapi.build("http://127.0.0.1:8000")
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"] == "3.1.0"
    documented = {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in openapi.METHODS
    }
    assert documented == _route_operations()
    schemes = doc["components"]["securitySchemes"]
    assert (schemes["tenantKey"]["in"], schemes["tenantKey"]["name"]) == ("header", "x-tenant-key")
    assert schemes["adminBearer"]["scheme"] == "bearer"
    assert {schemes["readTokenQuery"]["name"], schemes["readTokenQueryAlt"]["name"]} == {
        "t",
        "token",
    }
    # Every error status of every operation is the envelope (/readyz's 503 is its
    # readiness document, which names the failing dependency; seed 000's /v1/tts keeps
    # that product's {"audio_url", "error"} shape).
    for path, item in doc["paths"].items():
        for method in openapi.METHODS:
            for status, resp in item.get(method, {}).get("responses", {}).items():
                if path == "/v1/tts" and status != "413":
                    assert resp["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/V1TtsResponse"
                    }, (method, status)
                elif int(status) >= 400 and not (
                    method == "get" and item is doc["paths"]["/readyz"]
                ):
                    assert resp["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }, (method, status)
    # Request bodies are the pydantic models the handlers validate with.
    body = doc["paths"]["/api/sessions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/SessionCreate")
    schemas = doc["components"]["schemas"]
    assert schemas["SessionCreate"]["properties"]["autoDetect"]["type"] == "boolean"
    # The owner secret is a body field (and, equivalently, a header scheme).
    delete = doc["paths"]["/api/sessions/{session_id}"]["delete"]
    assert delete["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OwnerSecretBody"
    )
    assert "ownerSecret" in schemas["OwnerSecretBody"]["properties"]
    assert {"ownerSecret": []} in delete["security"] and {"tenantKey": []} in delete["security"]


async def test_served_document_and_docs_page(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url)) as srv, client(srv) as c:
        r = await c.get("/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        doc = r.json()
        validate(doc)
        assert doc["servers"] == [{"url": srv.url}]
        page = await c.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        # Self-contained: no script, no stylesheet or font from elsewhere.
        assert "<script" not in html and not re.search(r"(src|href)=\"https?://", html)
        for path, item in doc["paths"].items():
            for method in openapi.METHODS:
                if method in item:
                    assert f'id="{item[method]["operationId"]}"' in html
                    assert f"<code>{path}</code>" in html
        assert "/ws/stt" in html and "/ws/subscribe" in html


async def _schemathesis(url: str, config: Path, *args: str, phases: str = PHASES) -> str:
    """One bounded schemathesis run against ``url``; returns its report, asserts success."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "10",
        "--seed",
        "1",
        "--request-timeout",
        "10",
        "--workers",
        "1",
        "--no-color",
        # Every phase, named so that none is silently dropped by a default: the
        # stateful one follows the document's links (a created session's id and owner
        # secret into the operations on it, a created tenant's id into getTenant).
        "--phases",
        phases,
        *args,
        cwd=config.parent,
        env=os.environ
        | {
            "COLUMNS": "200",
            "PYTHONPATH": str(Path(__file__).parent),
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    text = out.decode(errors="replace")
    if os.environ.get("MCUSTT_TEST_SHOW_SCHEMATHESIS"):  # to read a passing run's report
        print(text)
    assert proc.returncode == 0, text[-15000:]
    return text


async def test_live_server_conforms_to_the_document(db_url: str, tmp_path: Path) -> None:
    """schemathesis (examples, coverage, fuzzing and stateful phases on SQLite; examples and
    stateful on PostgreSQL; bounded) with a real
    admin token and tenant key, on SQLite and PostgreSQL: no 5xx, and every status,
    content type, header and body is the one the document declares. The stateful phase
    must run scenarios along the document's links."""
    settings = make_settings(
        db_url,
        recognizer="scripted:ScriptedRecognizer",
        # Fuzzing creates hundreds of sessions and batch requests from one address.
        rate_create_session="100000/minute",
        rate_summarize="100000/minute",
        rate_ws_upgrade="100000/minute",
        rate_tts="100000/minute",
    )
    async with run_server(settings) as srv:
        async with client(srv) as c:
            tenant = await create_tenant(c, maxSessions=100_000)
            # A session with transcript lines and a ready summary: listSessions hands
            # its id to the fuzzer, so session operations also answer 200, not only 404.
            session = await create_session(c, tenant["apiKey"], title="fuzz")
            async with producer(session["ingestUrl"]) as (ws, got, task):
                await stream_pcm(ws, read_wav("hello_en.wav"), realtime=False)
                await ws.send('{"type":"stop"}')
                await asyncio.wait_for(task, 30)
            assert got.finals
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            f"""
# The SSE feed never ends on its own while a session is live.
max-stream-events = 2

[auth.openapi.tenantKey]
api_key = "{tenant["apiKey"]}"

[auth.openapi.tenantKeyQuery]
api_key = "{tenant["apiKey"]}"

[auth.openapi.adminBearer]
bearer = "{ADMIN}"

# The embedded summarizer cannot write documents: its documented answer is 503
# SUMMARIZER_UNCONFIGURED (issue 16), the one 5xx that is not a server error.
[[operations]]
include-operation-id = "createDocument"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""
        )
        # Tenant-facing operations first: the admin run may disable or re-key the
        # tenant the fuzzer authenticates with (it learns its id from listTenants).
        phases = PHASES if db_url.startswith("sqlite") else PHASES_AGAIN
        report = await _schemathesis(srv.url, config, "--exclude-tag", "Admin", phases=phases)
        assert "Operations:" in report
        assert stateful_scenarios(report) > 0, report[-5000:]
        report = await _schemathesis(srv.url, config, "--include-tag", "Admin", phases=phases)
        assert stateful_scenarios(report) > 0, report[-5000:]
