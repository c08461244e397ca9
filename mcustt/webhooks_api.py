"""Webhook and trigger endpoints (issue 16): the REST layer over :mod:`mcustt.webhooks`.

Every endpoint takes the tenant key, in ``X-Tenant-Key`` like the rest of the API or as
``Authorization: Bearer <tenant key>`` (what automation tools send); another tenant's
endpoint is 404, like a missing one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import wire
from mcustt.api import tenant_of
from mcustt.bodies import parse_body
from mcustt.state import app_state
from mcustt.webhooks import delivery_json, endpoint_json
from mcustt.wire import WebhookCreate


async def create_webhook(request: Request) -> Response:
    tenant = await tenant_of(request)
    body = await parse_body(request, WebhookCreate)
    endpoint, secret = await app_state(request).webhooks.create(
        tenant.id, body.url, list(body.events)
    )
    created: wire.WebhookCreated = {**endpoint_json(endpoint), "secret": secret}
    return JSONResponse(created, status_code=201)


async def list_webhooks(request: Request) -> Response:
    tenant = await tenant_of(request)
    endpoints = await app_state(request).webhooks.list_endpoints(tenant.id)
    listed: wire.WebhookList = {"webhooks": [endpoint_json(e) for e in endpoints]}
    return JSONResponse(listed)


async def get_webhook(request: Request) -> Response:
    tenant = await tenant_of(request)
    endpoint = await app_state(request).webhooks.get(tenant.id, request.path_params["webhook_id"])
    return JSONResponse(endpoint_json(endpoint))


async def delete_webhook(request: Request) -> Response:
    tenant = await tenant_of(request)
    await app_state(request).webhooks.delete(tenant.id, request.path_params["webhook_id"])
    return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    tenant = await tenant_of(request)
    endpoint, secret = await app_state(request).webhooks.rotate_secret(
        tenant.id, request.path_params["webhook_id"]
    )
    rotated: wire.WebhookCreated = {**endpoint_json(endpoint), "secret": secret}
    return JSONResponse(rotated)


async def list_deliveries(request: Request) -> Response:
    tenant = await tenant_of(request)
    rows = await app_state(request).webhooks.deliveries(
        tenant.id, request.path_params["webhook_id"]
    )
    listed: wire.WebhookDeliveryList = {"deliveries": [delivery_json(r) for r in rows]}
    return JSONResponse(listed)


async def redeliver(request: Request) -> Response:
    tenant = await tenant_of(request)
    row = await app_state(request).webhooks.redeliver(
        tenant.id, request.path_params["webhook_id"], request.path_params["delivery_id"]
    )
    return JSONResponse(delivery_json(row), status_code=202)


async def trigger_session_ended(request: Request) -> Response:
    tenant = await tenant_of(request)
    return JSONResponse(await app_state(request).webhooks.sessions_ended(tenant.id))


async def trigger_summary_ready(request: Request) -> Response:
    tenant = await tenant_of(request)
    return JSONResponse(await app_state(request).webhooks.summaries_ready(tenant.id))
