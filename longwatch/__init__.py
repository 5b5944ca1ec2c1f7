"""longwatch: time-true ingest of long footage for video-language models.

The core lives in ``pipeline`` (no Ray), model-side helpers in ``model``, Ray actors in ``actors``.
"""

__version__ = "0.1.0"

__all__ = ["ApiError", "Client", "__version__"]


def __getattr__(name: str):
    """``longwatch.Client`` / ``longwatch.ApiError``: the HTTP client, imported only when asked for (the
    pipeline and the workers never need httpx)."""
    if name in ("Client", "ApiError"):
        from longwatch import client

        return getattr(client, name)
    raise AttributeError(f"module 'longwatch' has no attribute {name!r}")
