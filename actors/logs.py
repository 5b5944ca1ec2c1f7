"""Ray's and Serve's own log lines go to a file in the data dir, never to the user's console.

Ray and Serve attach console handlers to their loggers (``ray``, ``ray.serve``) when they start; a
normal ``longwatch run`` would print Ray's token-authentication notice and Serve's start-up lines.
:func:`route_ray_logs` replaces those handlers by one file handler (``<data_dir>/logs/ray.log``);
call it before ``ray.init`` and again after ``serve.start`` (which re-installs its own).
"""

from __future__ import annotations

import logging
from pathlib import Path

RAY_LOGGERS = ("ray", "ray.serve")
_handler: logging.Handler | None = None


def route_ray_logs(log_file: str | Path | None = None) -> Path | None:
    """Send the Ray loggers to ``log_file`` (default: the file of the previous call); return it."""
    global _handler
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        if _handler is None or getattr(_handler, "baseFilename", None) != str(path.resolve()):
            if _handler is not None:
                _handler.close()
            _handler = logging.FileHandler(path)
            _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if _handler is None:
        return None
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if h is not _handler:
                logger.removeHandler(h)
        if _handler not in logger.handlers:
            logger.addHandler(_handler)
        logger.propagate = False
    return Path(_handler.baseFilename) if isinstance(_handler, logging.FileHandler) else None
