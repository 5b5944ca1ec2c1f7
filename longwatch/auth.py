"""API tokens and media roots for the HTTP API of ``longwatch serve``.

Tokens come from two places, both read by :meth:`TokenSet.load`:

* ``LONGWATCH_API_TOKENS`` (``Settings.api_tokens``): comma-separated ``scope:token`` entries, e.g.
  ``admin:s3cr3t,read:abc``. They are hashed on load; the plain text is not kept.
* the tokens file (``Settings.tokens_file``, default ``<runtime.data_dir>/tokens``), hashed at rest:
  one ``<scope> sha256:<hex> <name>`` line per token, ``#`` comments and blank lines allowed, mode
  0600. :func:`create_token` is the only place a plain token exists (it returns it once).

Scopes are ``read`` and ``admin``; admin implies read. A presented token is hashed once and compared
with every stored digest (:func:`hmac.compare_digest`, no early exit). No message here ever holds a
token's text.

Media roots (``Settings.media_roots``, ``os.pathsep``-separated) are the only directories whose files
an HTTP client may add as sources (:func:`check_source`); network sources pass unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from longwatch.pipeline.errors import ConfigError, LongwatchError, UnsupportedSourceError
from longwatch.pipeline.secrets import redact
from longwatch.pipeline.source import classify

SCOPES = ("read", "admin")
COOKIE = "longwatch_token"
QUERY = "token"
ENV_TOKENS = "LONGWATCH_API_TOKENS"
ENV_MEDIA_ROOTS = "LONGWATCH_MEDIA_ROOTS"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@:+-]{1,64}$")
_FILE_HEADER = "# longwatch API tokens, hashed: <scope> sha256:<hex> <name> (one per line; mode 0600)\n"


class AuthError(LongwatchError):
    """Base of the errors about API tokens and media roots."""


class TokenConfigError(AuthError, ConfigError):
    """A token entry (``LONGWATCH_API_TOKENS``) or a tokens-file line is invalid, or a name is taken.
    The message names the entry (its position) or the file and line, never the token's text.
    A :class:`ValueError` (through :class:`~longwatch.pipeline.errors.ConfigError`)."""


class MediaRootError(AuthError, PermissionError):
    """A source an HTTP client may not add. ``code`` is stable: ``files_not_allowed`` (no media roots
    configured), ``outside_media_roots`` (the path is relative, malformed, or resolves outside every
    root) or ``scheme_not_allowed`` (not a file, rtsp(s) or http(s) source)."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of the token's UTF-8 bytes (tokens are random, 256 bits: no salt/KDF needed)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One stored token: its scope, its digest (``sha256:<hex>``) and a name (1-64 letters, digits,
    ``_ . @ : + -``)."""

    scope: str
    digest: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise TokenConfigError("a token name must be 1-64 letters, digits or _ . @ : + - (no spaces)")
        if self.scope not in SCOPES:
            raise TokenConfigError(f"token {self.name!r}: unknown scope (expected one of {', '.join(SCOPES)})")
        if not isinstance(self.digest, str) or not _DIGEST.match(self.digest):
            raise TokenConfigError(f"token {self.name!r}: the digest is not 'sha256:' and 64 lowercase hex digits")

    def line(self) -> str:
        return f"{self.scope} {self.digest} {self.name}\n"


class TokenSet:
    """The tokens the API accepts (digests only)."""

    def __init__(self, entries: Iterable[TokenEntry] = ()):
        self._entries: tuple[TokenEntry, ...] = tuple(entries)
        self._digests = [(e.digest.encode("ascii"), e.scope) for e in self._entries]

    @classmethod
    def from_entries(cls, entries: list[TokenEntry]) -> TokenSet:
        return cls(entries)

    @classmethod
    def load(cls, settings: Any) -> TokenSet:
        """The tokens of ``settings.api_tokens`` (hashed now) and of the tokens file, if it exists."""
        entries = parse_env_tokens(settings.api_tokens or "")
        entries += list_tokens(tokens_path(settings))
        return cls(entries)

    @property
    def enabled(self) -> bool:
        """Whether any token is configured (if not, the caller decides: e.g. loopback only)."""
        return bool(self._entries)

    @property
    def entries(self) -> tuple[TokenEntry, ...]:
        return self._entries

    def check(self, presented: str | None) -> str | None:
        """The scope of the token ``presented`` (``admin`` wins if it matches several), else None."""
        if not presented:
            return None
        digest = hash_token(presented).encode("ascii")
        found: str | None = None
        for stored, scope in self._digests:  # every digest, every time: no early exit
            if hmac.compare_digest(digest, stored) and (found is None or scope == "admin"):
                found = scope
        return found

    @staticmethod
    def allows(scope_have: str | None, scope_needed: str) -> bool:
        """Whether a token of ``scope_have`` (None: no valid token) may do what needs ``scope_needed``."""
        if scope_needed not in SCOPES:
            raise ValueError(f"unknown scope {scope_needed!r}")
        return scope_have == "admin" or (scope_have is not None and scope_have == scope_needed)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TokenSet({len(self)} tokens)"


class LiveTokenSet(TokenSet):
    """A :class:`TokenSet` of ``settings`` that re-reads the tokens file when it changes (checked at most
    once a second), so `longwatch token create` / `revoke` take effect on a running service. A file that
    turns unreadable or malformed keeps the last good set (and says so in the log)."""

    def __init__(self, settings: Any):
        self._settings = settings
        self._path = tokens_path(settings)
        self._seen: tuple[float, int] | None = None
        self._checked = 0.0
        super().__init__(TokenSet.load(settings).entries)
        self._seen = self._stamp()

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = self._path.stat()
            return (st.st_mtime, st.st_size)
        except OSError:
            return None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        stamp = self._stamp()
        if stamp == self._seen:
            return
        try:
            fresh = TokenSet.load(self._settings)
        except (AuthError, OSError) as exc:
            logging.getLogger(__name__).warning("tokens file %s not reloaded: %s", self._path, exc)
            return
        self._seen = stamp
        self._entries = fresh.entries
        self._digests = [(e.digest.encode("ascii"), e.scope) for e in self._entries]

    @property
    def enabled(self) -> bool:
        self._refresh()
        return bool(self._entries)

    def check(self, presented: str | None) -> str | None:
        self._refresh()
        return super().check(presented)


def parse_env_tokens(text: str) -> list[TokenEntry]:
    """``scope:token,scope:token`` → entries named ``env-1``, ``env-2`` … (position among entries)."""
    entries: list[TokenEntry] = []
    raw = [part.strip() for part in text.split(",")]
    count = sum(1 for part in raw if part)
    position = 0
    for part in raw:
        if not part:
            continue
        position += 1
        where = f"{ENV_TOKENS} entry {position} of {count}"
        scope, colon, token = part.partition(":")
        scope, token = scope.strip(), token.strip()
        if not colon:
            raise TokenConfigError(f"{where}: expected 'scope:token' with scope read or admin (no ':' found)")
        if scope not in SCOPES:
            raise TokenConfigError(f"{where}: unknown scope (expected 'read:<token>' or 'admin:<token>')")
        if not token:
            raise TokenConfigError(f"{where}: the token after '{scope}:' is empty")
        if any(c.isspace() for c in token):
            raise TokenConfigError(f"{where}: the token holds whitespace")
        entries.append(TokenEntry(scope=scope, digest=hash_token(token), name=f"env-{position}"))
    return entries


def tokens_path(settings: Any) -> Path:
    """``settings.tokens_file``, or ``<runtime.data_dir>/tokens``."""
    if settings.tokens_file:
        return Path(settings.tokens_file).expanduser()
    return Path(settings.runtime.data_dir) / "tokens"


def _parse_file(path: Path, text: str) -> list[tuple[int, str, TokenEntry | None]]:
    """Every line of a tokens file: ``(line number, raw line, entry or None for comments/blanks)``."""
    rows: list[tuple[int, str, TokenEntry | None]] = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            rows.append((number, line, None))
            continue
        fields = stripped.split()
        where = f"tokens file {path} line {number}"
        if len(fields) != 3:
            raise TokenConfigError(f"{where}: expected '<scope> sha256:<hex> <name>' ({len(fields)} fields found)")
        try:
            entry = TokenEntry(scope=fields[0], digest=fields[1], name=fields[2])
        except TokenConfigError as exc:
            raise TokenConfigError(f"{where}: {exc}") from None
        rows.append((number, line, entry))
    return rows


def list_tokens(path: str | os.PathLike) -> list[TokenEntry]:
    """The entries of a tokens file; ``[]`` if it does not exist."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise TokenConfigError(f"tokens file {p}: not UTF-8 text") from None
    return [entry for _, _, entry in _parse_file(p, text) if entry is not None]


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``<path>.lock`` (create and revoke from two terminals at once)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def create_token(path: str | os.PathLike, *, scope: str, name: str) -> str:
    """Make a token, append its hashed line to the file (created 0600, parent directories as needed)
    and return the plain token: the only time it exists. A taken name is a :class:`TokenConfigError`."""
    p = Path(path)
    token = secrets.token_urlsafe(32)
    entry = TokenEntry(scope=scope, digest=hash_token(token), name=name)
    with _locked(p):
        if any(e.name == name for e in list_tokens(p)):
            raise TokenConfigError(f"tokens file {p}: a token named {name!r} exists (revoke it first)")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)
            size = os.fstat(fd).st_size
            prefix = _FILE_HEADER if size == 0 else ""
            if size:
                with open(p, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        prefix = "\n"
            os.write(fd, (prefix + entry.line()).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    return token


def revoke_token(path: str | os.PathLike, name: str) -> bool:
    """Drop the token(s) named ``name``; the file is rewritten atomically (0600). False if none was there."""
    p = Path(path)
    with _locked(p):
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        rows = _parse_file(p, text)
        kept = [line for _, line, entry in rows if entry is None or entry.name != name]
        if len(kept) == len(rows):
            return False
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=p.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(kept))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return True


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also ``[::1]`` and ``::ffff:127.x``) and ``localhost``; 0.0.0.0, :: and any
    other name are not."""
    h = (host or "").strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h.lower().rstrip(".") == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def presented_token(authorization_header: str | None, query_token: str | None, cookie_token: str | None) -> str | None:
    """The token a request presents: ``Authorization: Bearer <t>`` (scheme case-insensitive), else the
    query parameter, else the cookie. Empty values count as absent; another scheme (Basic) is ignored."""
    if authorization_header:
        scheme, _, value = authorization_header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if query_token:
        return query_token
    if cookie_token:
        return cookie_token
    return None


def media_roots(settings: Any) -> list[Path]:
    """The real paths of ``settings.media_roots`` (``os.pathsep``-separated; ``~`` expanded, relative
    ones taken from the current directory). One that is not an existing directory is a
    :class:`~longwatch.pipeline.errors.ConfigError` naming it."""
    roots: list[Path] = []
    for part in (settings.media_roots or "").split(os.pathsep):
        part = part.strip()
        if not part:
            continue
        real = Path(os.path.realpath(os.path.expanduser(part)))
        if not real.is_dir():
            raise ConfigError(f"media root {part!r} is not an existing directory ({ENV_MEDIA_ROOTS} / --media-root)")
        if real not in roots:
            roots.append(real)
    return roots


def check_source(source: str, roots: list[Path]) -> str:
    """A source an HTTP client asks to add: rtsp(s)/http(s) come back unchanged; a file (a path or
    ``file://`` URL) must be absolute and resolve (symlinks followed, ``..`` collapsed) inside one of
    ``roots``, and comes back as its resolved path. Nothing is opened. Refusals are
    :class:`MediaRootError` (codes: ``scheme_not_allowed``, ``files_not_allowed``, ``outside_media_roots``)."""
    try:
        kind, target = classify(source)
    except UnsupportedSourceError as exc:
        raise MediaRootError(str(exc), code="scheme_not_allowed") from None
    except (TypeError, ValueError) as exc:
        raise MediaRootError(f"invalid source: {redact(str(exc))}", code="scheme_not_allowed") from None
    if kind != "file":
        return source
    if not roots:
        raise MediaRootError(
            "HTTP clients can add files only under a media root, and none is configured: start the service "
            f"with `longwatch serve --media-root DIR` (or set {ENV_MEDIA_ROOTS}=DIR{os.pathsep}DIR2)",
            code="files_not_allowed",
        )
    shown = redact(target)
    if "\x00" in target or any(ord(c) < 32 for c in target):
        raise MediaRootError("the file path holds control characters", code="outside_media_roots")
    if not os.path.isabs(target):
        raise MediaRootError(
            f"file {shown!r}: HTTP clients must give an absolute path under a media root", code="outside_media_roots"
        )
    try:
        resolved = Path(os.path.realpath(target))
        real_roots = [Path(os.path.realpath(r)) for r in roots]
    except (OSError, ValueError) as exc:
        raise MediaRootError(f"file {shown!r}: cannot be resolved ({exc})", code="outside_media_roots") from None
    if not any(resolved.is_relative_to(root) for root in real_roots):
        raise MediaRootError(
            f"file {shown!r} is outside the media roots ({', '.join(str(r) for r in real_roots)})",
            code="outside_media_roots",
        )
    return str(resolved)


# ``token=<value>`` (any key ending in "token", percent-encoded or not) in a path, query or text.
_PARAM = re.compile(r"(?<![A-Za-z0-9_%.+\-])(?P<key>[A-Za-z0-9_%.+\-]*)=(?P<value>[^&\s\"'#;,<>]*)")
_MASK = "***"


def redact_tokens(text: str) -> str:
    """``token=<value>`` → ``token=***`` (also ``access_token=``, ``%74oken=`` …)."""
    if "=" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        key = unquote_plus(m.group("key")).lower()
        if key.endswith("token") and m.group("value"):
            return f"{m.group('key')}={_MASK}"
        return m.group(0)

    return _PARAM.sub(sub, text)


class RedactTokenFilter(logging.Filter):
    """Rewrites ``token=<value>`` to ``token=***`` in a record's message and string args (uvicorn's
    access log passes ``(client_addr, method, full_path, http_version, status_code)``), so tokens
    given as query parameters never reach a log. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact_tokens(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: redact_tokens(v) if isinstance(v, str) else v for k, v in args.items()}
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself
            return True
        clean = redact_tokens(message)
        if clean != message:  # the token is in the format string, or split over it and an arg ("token=%s")
            record.msg, record.args = clean, ()
        return True


def install_log_redaction(loggers: Iterable[str] = ("uvicorn.access", "uvicorn.error")) -> None:
    """Add one :class:`RedactTokenFilter` to each logger (idempotent). Call it before uvicorn serves."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokenFilter) for f in logger.filters):
            logger.addFilter(RedactTokenFilter())
