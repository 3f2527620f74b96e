"""The plugin's own pages: the fleet page's files (shipped inside the package, never from a CDN) and the API
reference, rendered here from the app's OpenAPI schema as plain HTML (FastAPI's Swagger UI and ReDoc pages
load their scripts from a public CDN, so the app does not serve them)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from importlib import resources
from typing import Any

#: Files under ``plugins/static`` the app serves, with their media types; nothing else is served.
ASSETS = {
    "fleet.html": "text/html; charset=utf-8",
    "fleet.js": "text/javascript; charset=utf-8",
    "fleet.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


def asset(name: str) -> bytes | None:
    """The bytes of a shipped asset, or None for a name that is not one."""
    if name not in ASSETS:
        return None
    return (resources.files("airflow_provider_shardmigrate.plugins") / "static" / name).read_bytes()


def _parameters(operation: Mapping[str, Any]) -> str:
    items = []
    for parameter in operation.get("parameters") or []:
        where = html.escape(str(parameter.get("in", "")))
        name = html.escape(str(parameter.get("name", "")))
        required = " (required)" if parameter.get("required") else ""
        items.append(f"<li><code>{name}</code> in {where}{required}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""


def api_reference(schema: Mapping[str, Any]) -> str:
    """An HTML page listing every endpoint of ``schema`` (an OpenAPI document): method, path, summary,
    parameters. Self-contained: no script, no style sheet, nothing fetched from elsewhere."""
    title = html.escape(str(schema.get("info", {}).get("title", "API")))
    rows = []
    for path, operations in sorted((schema.get("paths") or {}).items()):
        for method, operation in operations.items():
            summary = html.escape(str(operation.get("summary") or ""))
            description = html.escape(str(operation.get("description") or "")).replace("\n", "<br>")
            rows.append(
                f"<section><h2><code>{html.escape(method.upper())} {html.escape(path)}</code></h2>"
                f"<p><strong>{summary}</strong></p><p>{description}</p>{_parameters(operation)}</section>"
            )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title} API</title></head>"
        f"<body style='font-family: system-ui, sans-serif; max-width: 960px; margin: 20px auto'>"
        f"<h1>{title} API</h1><p>Every endpoint requires an Airflow login (a Bearer token or the UI session). "
        f"The OpenAPI document is at <a href='openapi.json'>openapi.json</a>.</p>{''.join(rows)}</body></html>"
    )
