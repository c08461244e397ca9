"""``GET /docs``: the OpenAPI document rendered as one plain HTML page, on the server.

No JavaScript and no CDN, so it works offline and behind strict CSPs. WebSockets are
outside OpenAPI; the document lists them under ``x-websockets`` and so does the page.
"""

from __future__ import annotations

import html
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from mcustt.openapi import METHODS, Schema, build
from mcustt.state import app_state


async def docs_page(request: Request) -> Response:
    return HTMLResponse(render_html(build(app_state(request).settings.public_url)))


CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:1000px;margin:2rem auto;padding:0 1rem;
color:#1b1f24}
h1{margin-bottom:0}h2{margin-top:2.5rem;border-bottom:1px solid #ddd}
code,pre{font:13px ui-monospace,monospace;background:#f4f5f7;border-radius:4px}
code{padding:0 .25rem}pre{padding:.6rem;overflow:auto;max-height:24rem}
section.op{border:1px solid #ddd;border-radius:8px;padding:.4rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.patch{color:#a60}.delete{color:#c22}
table{border-collapse:collapse;margin:.5rem 0}td,th{text-align:left;padding:.15rem .6rem;
border-bottom:1px solid #eee;vertical-align:top}
details summary{cursor:pointer}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _md(text: str) -> str:
    """Escape, then render the only markdown the document uses: `code`."""
    parts = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _schema_name(schema: Schema) -> str:
    """A link to a named schema, or the inline schema's type."""
    ref = schema.get("$ref")
    if not ref:
        return f"<code>{_e(schema.get('type', 'object'))}</code>"
    name = _e(ref.rsplit("/", 1)[-1])
    return f'<a href="#schema-{name}">{name}</a>'


BEARER_LABELS = {
    "adminBearer": "admin bearer",
    "readTokenBearer": "read token as bearer",
    "ingestTokenBearer": "ingest token as bearer",
}


def _security_text(security: list[Schema], schemes: dict[str, Schema]) -> str:
    if not security:
        return "none"
    names = []
    for requirement in security:
        for name in requirement:
            scheme = schemes[name]
            if scheme["type"] == "apiKey":
                where = {"header": "header", "query": "query"}[scheme["in"]]
                names.append(f"<code>{_e(scheme['name'])}</code> {where}")
            else:
                names.append(BEARER_LABELS.get(name, "bearer"))
    return " or ".join(names)


def _operation_html(path: str, method: str, op: Schema, doc: dict[str, Any]) -> str:
    schemes = doc["components"]["securitySchemes"]
    rows = [
        f'<section class="op" id="{_e(op["operationId"])}">',
        f'<h3><span class="m {method}">{method}</span> <code>{_e(path)}</code></h3>',
        f"<p>{_md(op['summary'])}</p>",
    ]
    if op.get("description"):
        rows.append(f"<p>{_md(op['description'])}</p>")
    rows.append(f"<p><b>Auth:</b> {_security_text(op['security'], schemes)}</p>")
    params = doc["paths"][path].get("parameters", []) + op.get("parameters", [])
    if params:
        rows.append("<table><tr><th>parameter</th><th>in</th><th>schema</th></tr>")
        for p in params:
            rows.append(
                f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                f"<td><code>{_e(json.dumps(p['schema']))}</code></td></tr>"
            )
        rows.append("</table>")
    body = op.get("requestBody")
    if body:
        need = "required" if body.get("required") else "optional"
        for media, spec in body["content"].items():
            rows.append(
                f"<p><b>Body</b> ({need}, <code>{_e(media)}</code>): "
                f"{_schema_name(spec['schema'])}</p>"
            )
    rows.append("<table><tr><th>status</th><th>meaning</th><th>content</th></tr>")
    for status, resp in op["responses"].items():
        content = ", ".join(
            f"<code>{_e(media)}</code> {_schema_name(spec['schema'])}"
            for media, spec in resp.get("content", {}).items()
        )
        rows.append(
            f"<tr><td>{_e(status)}</td><td>{_md(resp['description'])}</td><td>{content}</td></tr>"
        )
    rows.append("</table></section>")
    return "\n".join(rows)


def render_html(doc: dict[str, Any]) -> str:
    """The whole document as one self-contained page."""
    info = doc["info"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{_e(info['title'])} API</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(info['title'])} API <small>{_e(info['version'])}</small></h1>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1)</p>',
    ]
    out += [f"<p>{_md(p)}</p>" for p in info["description"].split("\n\n")]
    out.append("<h2>Contents</h2><ul>")
    ops_by_tag: dict[str, list[tuple[str, str, Schema]]] = {t["name"]: [] for t in doc["tags"]}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                ops_by_tag[item[method]["tags"][0]].append((path, method, item[method]))
    for tag in doc["tags"]:
        out.append(f'<li><a href="#tag-{_e(tag["name"])}">{_e(tag["name"])}</a><ul>')
        for path, method, op in ops_by_tag[tag["name"]]:
            out.append(
                f'<li><a href="#{_e(op["operationId"])}">{method.upper()} {_e(path)}</a></li>'
            )
        out.append("</ul></li>")
    out.append('<li><a href="#websockets">WebSockets</a></li>')
    out.append('<li><a href="#schemas">Schemas</a></li></ul>')
    out.append("<h2>Authentication</h2><table><tr><th>scheme</th><th>how</th></tr>")
    for name, scheme in doc["components"]["securitySchemes"].items():
        how = (
            f"<code>{_e(scheme['name'])}</code> in {scheme['in']}"
            if scheme["type"] == "apiKey"
            else "<code>Authorization: Bearer …</code>"
        )
        out.append(f"<tr><td>{_e(name)}</td><td>{how}<br>{_md(scheme['description'])}</td></tr>")
    out.append("</table>")
    for tag in doc["tags"]:
        out.append(f'<h2 id="tag-{_e(tag["name"])}">{_e(tag["name"])}</h2>')
        out.append(f"<p>{_md(tag['description'])}</p>")
        out += [_operation_html(path, m, op, doc) for path, m, op in ops_by_tag[tag["name"]]]
    out.append('<h2 id="websockets">WebSockets</h2>')
    for ws in doc.get("x-websockets", []):
        out.append(
            f'<section class="op"><h3><span class="m">ws</span> <code>{_e(ws["path"])}'
            f"</code></h3><p>{_md(ws['summary'])}</p><table>"
        )
        for key in ("auth", "send", "receive", "close"):
            out.append(f"<tr><th>{key}</th><td>{_md(ws[key])}</td></tr>")
        out.append("</table></section>")
    out.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in doc["components"]["schemas"].items():
        out.append(
            f'<details id="schema-{_e(name)}"><summary><code>{_e(name)}</code></summary>'
            f"<pre>{_e(json.dumps(schema, indent=2))}</pre></details>"
        )
    out.append("</body></html>")
    return "\n".join(out)
