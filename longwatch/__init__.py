"""longwatch: time-true ingest of long footage for video-language models.

The core lives in ``pipeline`` (no Ray), model-side helpers in ``model``, Ray actors in ``actors``.
"""

__version__ = "0.1.0"
