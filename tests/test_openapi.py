"""The API's OpenAPI document: the committed ``docs/openapi.json`` is what the code builds (no drift), the
live service serves that same document (to a token holder only), and its ``/docs`` page is self-contained:
Swagger UI from the package's own ``/static`` files, no CDN."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from longwatch.api import openapi_document

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "openapi.json"


def _differences(committed: dict, built: dict) -> list[str]:
    """What differs, by path (and method) and by component schema, then any other top-level key."""
    out: list[str] = []

    def compare(kind: str, old: dict, new: dict) -> None:
        for key in sorted(set(old) | set(new)):
            if key not in new:
                out.append(f"{kind} {key}: in docs/openapi.json only (gone from the code)")
            elif key not in old:
                out.append(f"{kind} {key}: in the code only (missing from docs/openapi.json)")
            elif old[key] != new[key]:
                if kind == "path" and isinstance(old[key], dict) and isinstance(new[key], dict):
                    methods = sorted(m for m in set(old[key]) | set(new[key]) if old[key].get(m) != new[key].get(m))
                    out.append(f"path {key}: differs ({', '.join(m.upper() for m in methods)})")
                else:
                    out.append(f"{kind} {key}: differs")

    compare("path", committed.get("paths", {}), built.get("paths", {}))
    compare(
        "schema",
        committed.get("components", {}).get("schemas", {}),
        built.get("components", {}).get("schemas", {}),
    )
    for key in sorted((set(committed) | set(built)) - {"paths"}):
        old_v, new_v = committed.get(key), built.get(key)
        if key == "components":
            old_v = {k: v for k, v in (old_v or {}).items() if k != "schemas"}
            new_v = {k: v for k, v in (new_v or {}).items() if k != "schemas"}
        if old_v != new_v:
            out.append(f"top-level {key!r}: differs")
    return out


def test_committed_openapi_json_is_what_the_code_builds():
    assert COMMITTED.is_file(), "docs/openapi.json is missing: run `python -m longwatch.api` to write it"
    committed = json.loads(COMMITTED.read_text())
    built = json.loads(json.dumps(openapi_document()))  # the same JSON round trip the file went through
    if committed != built:
        diff = "\n  ".join(_differences(committed, built)) or "(key order or value types only)"
        pytest.fail(
            "docs/openapi.json is out of date with longwatch/api.py; run `python -m longwatch.api` and commit "
            f"the result. Differences:\n  {diff}",
            pytrace=False,
        )


def test_committed_file_is_in_the_canonical_format():
    """The file is exactly what `python -m longwatch.api` writes (sorted keys, indent 2, trailing newline),
    so regenerating it never makes a noisy diff."""
    text = COMMITTED.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n", (
        "docs/openapi.json is not in the canonical format: run `python -m longwatch.api`"
    )


def test_the_service_serves_the_same_document_to_token_holders_only(service):
    url = f"{service['url']}/openapi.json"
    anonymous = httpx.get(url, timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["code"] == "unauthorized"
    bad = httpx.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=30)
    assert bad.status_code == 401, bad.text

    served = httpx.get(url, headers=service.headers("read"), timeout=30)
    assert served.status_code == 200, served.text
    assert served.headers["content-type"].startswith("application/json")
    built = json.loads(json.dumps(openapi_document()))
    if served.json() != built:
        diff = "\n  ".join(_differences(built, served.json()))
        pytest.fail(f"the live /openapi.json differs from openapi_document():\n  {diff}", pytrace=False)


def test_docs_page_uses_only_local_static_assets_and_they_load(service):
    base = service["url"]
    assert httpx.get(f"{base}/docs", timeout=30).status_code == 401  # a token is needed for the page too

    page = httpx.get(f"{base}/docs", headers=service.headers("read"), timeout=30)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for cdn in ("jsdelivr", "unpkg", "cdnjs", "googleapis", "fastapi.tiangolo.com"):
        assert cdn not in html, f"/docs references {cdn}"
    # Every asset the page loads (<script src>, <link href>, <img src>) and any absolute URL at all.
    assets = re.findall(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", html, re.I)
    absolute = re.findall(r"""["'((]((?:https?:)?//[^"')\s]+)""", html)
    assert not absolute, f"/docs references other hosts: {absolute}"
    assert assets, html
    for ref in assets:
        assert urlsplit(ref).netloc == "" and ref.startswith("/static/"), f"/docs loads {ref!r}, not a local asset"
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), assets
    assert "'/openapi.json'" in html or '"/openapi.json"' in html, "the page does not load the local document"

    # The assets load as a browser loads them: a <script>/<link> sends no Authorization header.
    for ref in assets:
        got = httpx.get(urljoin(base + "/", ref.lstrip("/")), timeout=30)
        assert got.status_code == 200, (ref, got.status_code, got.text[:200])
        assert len(got.content) > 0, ref
        if ref.endswith(".js"):
            assert "javascript" in got.headers["content-type"], (ref, got.headers["content-type"])
            assert b"SwaggerUIBundle" in got.content
        elif ref.endswith(".css"):
            assert got.headers["content-type"].startswith("text/css"), (ref, got.headers["content-type"])
