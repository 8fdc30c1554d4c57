"""The OpenAPI 3 document and the ``/docs`` page, generated from the route table.

Request bodies and query strings are described by the same pydantic models that validate
them, so the document cannot drift from what the server accepts.
"""

from __future__ import annotations

import html as html_lib
import json
from typing import Any

from mail_proxy.core import __version__
from mail_proxy.core.contracts.routes import RouteTable


def document(routes: RouteTable) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for spec in sorted(routes, key=lambda s: (s.path, s.method)):
        op: dict[str, Any] = {
            "summary": spec.summary,
            "operationId": f"{spec.method.lower()}_{spec.path.strip('/').replace('/', '_').replace('{', '').replace('}', '') or 'root'}",
            "tags": [spec.plugin],
            "x-scope": spec.scope,
            "responses": {
                str(spec.success): {"description": "success: a JSON object with ok: true"},
                "400": {"$ref": "#/components/responses/Error"},
                # 404 (unknown id or tenant), 409, 413, 415, 503 (database away), ...
                "default": {"$ref": "#/components/responses/Error"},
            },
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(spec.path)
        ]
        if spec.query is not None:
            qschema = spec.query.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, prop in qschema.get("properties", {}).items():
                params.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in qschema.get("required", []),
                        "schema": _strip_title(prop),
                    }
                )
        if params:
            op["parameters"] = params
        if spec.body is not None:
            bschema = spec.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(bschema.pop("$defs", {}))
            schemas[spec.body.__name__] = bschema
            op["requestBody"] = {
                # a body whose fields are all optional may be left out (no body: no fields)
                "required": bool(bschema.get("required")),
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{spec.body.__name__}"}
                    }
                },
            }
        if spec.scope != "public":
            op["security"] = [{"apiToken": []}]
            op["responses"]["401"] = {"$ref": "#/components/responses/Error"}
            op["responses"]["403"] = {"$ref": "#/components/responses/Error"}
        paths.setdefault(spec.path, {})[spec.method.lower()] = op
    schemas["Error"] = {
        "type": "object",
        "required": ["ok", "error", "code"],
        "properties": {
            "ok": {"type": "boolean", "const": False},
            "error": {"type": "string"},
            "code": {"type": "string"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "genro-mail-proxy", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiToken": {"type": "apiKey", "in": "header", "name": "X-API-Token"}
            },
            "responses": {
                "Error": {
                    "description": "failure",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
        },
    }


def _path_params(path: str) -> list[str]:
    return [
        part[1:-1].split(":")[0]
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    ]


def _strip_title(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "title"}


def html(routes: RouteTable) -> str:
    """A self-contained page listing every route with its scope and schemas."""
    doc = document(routes)
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            body = (
                op.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema")
            )
            detail = ""
            if body:
                name = body["$ref"].rsplit("/", 1)[-1]
                detail = f"<pre>{html_lib.escape(json.dumps(doc['components']['schemas'][name], indent=2))}</pre>"
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html_lib.escape(path)}</code></td>"
                f"<td>{op['x-scope']}</td><td>{html_lib.escape(op['summary'])}{detail}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>genro-mail-proxy API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:4px 8px;"
        "border-bottom:1px solid #ddd}pre{font-size:11px;max-height:20em;overflow:auto}</style>"
        "</head><body><h1>genro-mail-proxy API</h1>"
        "<p>Send the token in the <code>X-API-Token</code> header. Machine-readable: "
        "<a href='/openapi.json'>/openapi.json</a>.</p>"
        "<table><tr><th>method</th><th>path</th><th>scope</th><th>what</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
