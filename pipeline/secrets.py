"""Credentials in source URLs: redacted wherever a URL is shown or stored, resolved only where opened.

A camera URL may carry a user and password (``rtsp://admin:hunter2@10.0.0.5/stream``) or name
environment variables instead (``rtsp://cam:${CAM3_PASSWORD}@10.0.0.5/stream``).

* :func:`redact` is the form that may be shown, logged, stored or returned: the password of every
  URL in a text (a source, an error message that echoes one, FFmpeg's own text) becomes ``***``, as
  do secret-looking query parameters (``password=``, ``token=`` …) and a user given with no password
  (often a token). ``${VAR}`` references are kept as they are: they name a secret, they are none, and
  a restarted service resolves them again.
* :func:`expand` resolves ``${VAR}`` references from the environment. Only the code that opens the
  stream calls it (:meth:`pipeline.source.Source.open`); the expanded URL lives in that object and is
  never logged. An unset variable is a :class:`~pipeline.errors.MissingSecretError` that names the
  variable, never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

MASK = "***"

# ``scheme://userinfo@``: the userinfo runs to the last ``@`` before the path, whitespace or a quote
# (a raw ``@`` in a password still redacts whole).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#'\"<>\\]*)@")
_SECRET_PARAMS = (
    r"password|passwd|pwd|pass|secret|token|access_token|auth|api_?key|key|sig|signature"
    r"|x-amz-signature|x-amz-credential|x-amz-security-token"
)
_QUERY = re.compile(rf"(?P<name>[?&;](?:{_SECRET_PARAMS}))=(?P<value>[^&#\s'\"<>]*)", re.IGNORECASE)
_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")
_ONLY_REFERENCES = re.compile(r"(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+")


def _keep(value: str) -> bool:
    """A value that is empty or only ``${VAR}`` references names no secret itself."""
    return not value or bool(_ONLY_REFERENCES.fullmatch(value))


def _userinfo(match: re.Match[str]) -> str:
    userinfo = match["userinfo"]
    user, colon, password = userinfo.partition(":")
    if colon:
        safe = f"{user}:{password if _keep(password) else MASK}"
    else:  # a lone user is often a token (https://TOKEN@host): masked unless it is a reference
        safe = user if _keep(user) else MASK
    return f"{match['scheme']}{safe}@"


def _query(match: re.Match[str]) -> str:
    value = match["value"]
    return f"{match['name']}={value if _keep(value) else MASK}"


def redact(text: str | os.PathLike | None, *, secrets: Iterable[str] = ()) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***`` (``${VAR}`` kept).

    ``secrets``: literal values to mask wherever they appear too (the expanded passwords of an opened
    source, in case a library echoes one outside a URL). Safe on any text: no URL, no change.
    """
    if text is None:
        return ""
    out = os.fspath(text)
    if "@" in out:
        out = _USERINFO.sub(_userinfo, out)
    if "=" in out:
        out = _QUERY.sub(_query, out)
    for value in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        out = out.replace(value, MASK)
    return out


def references(text: str) -> list[str]:
    """The environment variables ``text`` names (``${VAR}``), in order, without repeats."""
    return list(dict.fromkeys(m["name"] for m in _REFERENCE.finditer(text)))


def expand(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every ``${VAR}`` replaced by the variable's value (inserted as is: percent-encode
    characters a URL reserves, such as ``@ : /``, in the value itself).

    Raises :class:`~pipeline.errors.MissingSecretError` naming the first variable that is not set;
    the message names variables only, never a value.
    """
    from .errors import MissingSecretError

    env = os.environ if env is None else env
    names = references(text)
    missing = [n for n in names if n not in env]
    if missing:
        raise MissingSecretError(missing, uri=text)
    return _REFERENCE.sub(lambda m: env[m["name"]], text)


def secret_values(uri: str) -> list[str]:
    """The secrets an (expanded) URL carries: its password (or lone user) and secret query values."""
    out: list[str] = []
    for m in _USERINFO.finditer(uri):
        user, colon, password = m["userinfo"].partition(":")
        out.append(password if colon else user)
    out.extend(m["value"] for m in _QUERY.finditer(uri))
    return [v for v in out if v and not _keep(v)]
