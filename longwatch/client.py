"""The Python client of ``longwatch serve``: ``Client(url).add(…)``, ``remove``, ``pause``, ``resume``,
``streams``, ``events``, ``follow``. The CLI's client commands use it.

The service's URL: ``url``, else ``LONGWATCH_URL``, else the one the local ``serve`` wrote into its data
directory (``serve.json``: another port found with no flags), else ``http://127.0.0.1:8470``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from longwatch.pipeline.errors import LongwatchError

DEFAULT_URL = "http://127.0.0.1:8470"
SERVE_FILE = "serve.json"


class ApiError(LongwatchError):
    """The service refused a request: ``status`` (HTTP), ``code`` (stable), the message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class ServiceUnavailableError(LongwatchError, ConnectionError):
    """No longwatch service answers at the URL."""


def service_url(url: str | None = None, *, data_dir: str | os.PathLike | None = None) -> str:
    if url:
        return url.rstrip("/")
    if os.environ.get("LONGWATCH_URL"):
        return os.environ["LONGWATCH_URL"].rstrip("/")
    if data_dir is None:
        from longwatch.pipeline.config import Settings

        data_dir = Settings().runtime.data_dir
    try:
        return str(json.loads((Path(data_dir) / SERVE_FILE).read_text())["url"]).rstrip("/")
    except (OSError, ValueError, KeyError):
        return DEFAULT_URL


class Client:
    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = 30.0):
        """``token``: an API token (default: ``LONGWATCH_TOKEN``), sent as ``Authorization: Bearer``."""
        self.url = service_url(url)
        token = token if token is not None else os.environ.get("LONGWATCH_TOKEN") or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(
                f"no longwatch service answers at {self.url} ({type(exc).__name__}); start one with "
                "`longwatch serve`, or point LONGWATCH_URL / --url at it"
            ) from None
        if response.status_code >= 400:
            try:
                body = response.json()
                code, message = body.get("code", "error"), body.get("message", response.text)
            except ValueError:
                code, message = "error", response.text[:500]
            raise ApiError(response.status_code, code, message)
        return response.json()

    # ---- streams ----------------------------------------------------------------------------------

    def health(self) -> bool:
        """Whether a longwatch service answers at the URL (anything else there, or nothing, is False)."""
        try:
            return self._http.get("/healthz", timeout=5.0).json() == {"status": "ok"}
        except (httpx.HTTPError, ValueError):
            return False

    def add(
        self,
        source: str,
        *,
        id: str | None = None,
        events: str | None = None,
        sampler: dict | None = None,
        start_at: str | None = None,
        validate: bool = True,
        reprocess: bool = False,
    ) -> dict:
        body = {
            "source": source,
            "id": id,
            "events": events,
            "sampler": sampler or {},
            "start_at": start_at,
            "validate": validate,
            "reprocess": reprocess,
        }
        return self._call("POST", "/api/v1/streams", json=body)

    def remove(self, stream_id: str, *, purge: bool = False) -> dict:
        return self._call("DELETE", f"/api/v1/streams/{stream_id}", params={"purge": str(purge).lower()})

    def pause(self, stream_id: str) -> dict:
        return self._call("PATCH", f"/api/v1/streams/{stream_id}", json={"state": "paused"})

    def resume(self, stream_id: str) -> dict:
        return self._call("PATCH", f"/api/v1/streams/{stream_id}", json={"state": "running"})

    def streams(self) -> list[dict]:
        return self._call("GET", "/api/v1/streams")

    def stream(self, stream_id: str) -> dict:
        return self._call("GET", f"/api/v1/streams/{stream_id}")

    def events(
        self,
        *,
        stream: str | None = None,
        event: str | None = None,
        after: str | float | None = None,
        before: str | float | None = None,
        min_score: float | None = None,
        state: str | None = None,
        order: str = "asc",
        limit: int | None = None,
        page_size: int = 1000,
    ) -> Iterator[dict]:
        """Every segment overlapping [after, before] (stream seconds or ISO UTC), page by page
        (``page_size`` a request), at most ``limit`` in all."""
        params: dict[str, Any] = {
            k: v
            for k, v in dict(
                stream=stream, event=event, after=after, before=before, min_score=min_score, state=state
            ).items()
            if v is not None
        }
        params["order"] = order
        given = 0
        cursor = None
        while True:
            size = page_size if limit is None else min(page_size, limit - given)
            if size <= 0:
                return
            body = self._call(
                "GET", "/api/v1/events", params={**params, "limit": size, **({"cursor": cursor} if cursor else {})}
            )
            for item in body["items"]:
                given += 1
                yield item
            cursor = body.get("next_cursor")
            if not cursor:
                return

    def event(self, event_id: str) -> dict:
        return self._call("GET", f"/api/v1/events/{event_id}")

    def timeline(
        self, *, after: str | float, before: str | float, streams: list[str] | None = None, bucket: float | None = None,
        event: str | None = None,
    ) -> dict:  # fmt: skip
        params: dict[str, Any] = {"after": after, "before": before}
        if streams:
            params["streams"] = ",".join(streams)
        if bucket:
            params["bucket"] = bucket
        if event:
            params["event"] = event
        return self._call("GET", "/api/v1/timeline", params=params)

    def follow(
        self, *, stream: str | None = None, event: str | None = None, since: str | None = None
    ) -> Iterator[dict]:
        """The live feed, forever: ``{"kind": "segment.close", "cursor": …, "segment": {…}}`` for segments
        (kinds segment.open / segment.update / segment.close) and ``{"kind": "stream.state", "cursor": …,
        "stream": {"stream", "state", "reason", "at"}}`` for state changes. A dropped connection (or a
        restarting service) is re-made with the last cursor, so nothing is missed or seen twice."""
        cursor = since
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": cursor} if cursor else {})}
            params = {k: v for k, v in dict(stream=stream, event=event).items() if v}
            try:
                with self._http.stream(
                    "GET", "/api/v1/events/live", headers=headers, params=params, timeout=httpx.Timeout(30, read=60)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        try:
                            body = response.json()
                        except ValueError:
                            body = {"message": response.text[:500]}
                        raise ApiError(response.status_code, body.get("code", "error"), body.get("message", ""))
                    kind, ident = "message", None
                    data: list[str] = []
                    for line in response.iter_lines():
                        if line.startswith(":"):
                            continue
                        if not line:
                            if data:
                                cursor = ident or cursor
                                payload = json.loads("\n".join(data))
                                key = "stream" if kind == "stream.state" else "segment"
                                yield {"kind": kind, "cursor": ident, key: payload}
                            kind, ident, data = "message", None, []
                            continue
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "event":
                            kind = value
                        elif name == "id":
                            ident = value
                        elif name == "data":
                            data.append(value)
            except httpx.TransportError:
                time.sleep(1.0)  # the service restarts: follow on from the cursor
