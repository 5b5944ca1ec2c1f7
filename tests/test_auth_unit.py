"""longwatch/auth.py: API tokens (env and hashed file), scopes, loopback, media roots, log redaction.

Unsupported schemes (ftp://, javascript:) are refused by :func:`check_source` as
``MediaRootError(code="scheme_not_allowed")``: every refusal of check_source is one exception type.
"""

from __future__ import annotations

import logging
import os
import stat

import pytest

from longwatch.auth import (
    COOKIE,
    QUERY,
    SCOPES,
    AuthError,
    MediaRootError,
    RedactTokenFilter,
    TokenConfigError,
    TokenEntry,
    TokenSet,
    check_source,
    create_token,
    hash_token,
    install_log_redaction,
    is_loopback,
    list_tokens,
    media_roots,
    presented_token,
    revoke_token,
)
from longwatch.pipeline.config import Settings
from longwatch.pipeline.errors import ConfigError, LongwatchError

SECRET = "Zq81secretTOKENvalue"


def settings(tmp_path, monkeypatch, **env: str) -> Settings:
    for var in ("LONGWATCH_API_TOKENS", "LONGWATCH_TOKENS_FILE", "LONGWATCH_MEDIA_ROOTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LONGWATCH_RUNTIME__DATA_DIR", str(tmp_path / "data"))
    for key, value in env.items():
        monkeypatch.setenv(f"LONGWATCH_{key}", value)
    return Settings()


def test_settings_read_plain_strings(tmp_path, monkeypatch):
    s = settings(tmp_path, monkeypatch)
    assert (s.api_tokens, s.tokens_file, s.media_roots) == ("", None, "")
    s = settings(
        tmp_path, monkeypatch, API_TOKENS="admin:s3cr3t, read:abc", TOKENS_FILE="/x/tokens", MEDIA_ROOTS="/a:/b"
    )
    assert (s.api_tokens, s.tokens_file, s.media_roots) == ("admin:s3cr3t, read:abc", "/x/tokens", "/a:/b")
    # env tokens never travel with the settings (model_dump_json goes to Ray actors) nor show in repr
    assert "s3cr3t" not in s.model_dump_json() and "s3cr3t" not in repr(s)
    assert Settings.model_validate_json(s.model_dump_json()).media_roots == "/a:/b"


def test_env_tokens_and_scopes(tmp_path, monkeypatch):
    tokens = TokenSet.load(settings(tmp_path, monkeypatch, API_TOKENS=f" admin:{SECRET} ,read:abc:def,, "))
    assert len(tokens) == 2 and tokens.enabled
    assert SECRET not in repr(tokens.entries) and all(e.digest.startswith("sha256:") for e in tokens.entries)
    assert tokens.check(SECRET) == "admin"
    assert tokens.check("abc:def") == "read"  # the token is everything after the first ':'
    for wrong in ("abc", SECRET + "x", "", None):
        assert tokens.check(wrong) is None
    assert TokenSet.allows("admin", "read") and TokenSet.allows("admin", "admin") and TokenSet.allows("read", "read")
    assert not TokenSet.allows("read", "admin") and not TokenSet.allows(None, "read")
    assert SCOPES == ("read", "admin")
    empty = TokenSet.load(settings(tmp_path, monkeypatch))
    assert not empty.enabled and len(empty) == 0 and empty.check(SECRET) is None


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        (f"root:{SECRET}", "unknown scope"),
        (f"read:abc,{SECRET}", "entry 2 of 2: expected 'scope:token'"),
        ("admin:", "is empty"),
        (f"{SECRET}:read", "unknown scope"),  # swapped by mistake: the token is still not echoed
        (f"read:{SECRET} {SECRET}", "whitespace"),
    ],
)
def test_env_token_errors_never_echo_the_token(tmp_path, monkeypatch, entries, says):
    with pytest.raises(TokenConfigError, match=says) as info:
        TokenSet.load(settings(tmp_path, monkeypatch, API_TOKENS=entries))
    assert SECRET not in str(info.value) and "LONGWATCH_API_TOKENS" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AuthError)


def test_tokens_file_round_trip(tmp_path, monkeypatch):
    path = tmp_path / "data" / "tokens"  # the default place: <runtime.data_dir>/tokens
    admin = create_token(path, scope="admin", name="ops")
    read = create_token(path, scope="read", name="dashboard")
    assert admin != read and len(admin) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert admin not in text and read not in text and hash_token(admin) in text  # hashed at rest
    assert [(e.scope, e.name) for e in list_tokens(path)] == [("admin", "ops"), ("read", "dashboard")]
    with pytest.raises(TokenConfigError, match="dashboard"):
        create_token(path, scope="admin", name="dashboard")
    with pytest.raises(TokenConfigError):
        create_token(path, scope="write", name="x")

    tokens = TokenSet.load(settings(tmp_path, monkeypatch, API_TOKENS="read:abc"))
    assert len(tokens) == 3 and tokens.check(admin) == "admin" and tokens.check(read) == "read"

    assert revoke_token(path, "ops") is True and revoke_token(path, "ops") is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [e.name for e in list_tokens(path)] == ["dashboard"]
    assert path.read_text().startswith("#")  # the comment header survives the rewrite
    tokens = TokenSet.load(settings(tmp_path, monkeypatch, TOKENS_FILE=str(path)))
    assert tokens.check(admin) is None and tokens.check(read) == "read"
    assert list_tokens(tmp_path / "absent") == [] and revoke_token(tmp_path / "absent", "ops") is False


def test_tokens_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "tokens"
    good = TokenEntry(scope="read", digest=hash_token("x"), name="ok")
    path.write_text(f"# comment\n\n{good.scope} {good.digest} {good.name}\nread {SECRET} pasted\n")
    with pytest.raises(TokenConfigError, match=rf"{path} line 4") as info:
        list_tokens(path)
    assert SECRET not in str(info.value)
    path.write_text(f"admin {hash_token('y')}\n")
    with pytest.raises(TokenConfigError, match="line 1"):
        list_tokens(path)
    with pytest.raises(TokenConfigError):
        TokenEntry(scope="read", digest=hash_token("x"), name="has space")
    assert TokenSet.from_entries([good]).check("x") == "read"


def test_is_loopback():
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", "localhost.example.com", ""):
        assert not is_loopback(host), host


def test_presented_token_precedence():
    assert (COOKIE, QUERY) == ("longwatch_token", "token")
    assert presented_token("Bearer h", "q", "c") == "h"
    assert presented_token("bEaReR  h ", None, None) == "h"
    assert presented_token("Basic dXNlcjpwdw==", "q", "c") == "q"
    assert presented_token("Bearer ", "", "c") == "c"
    assert presented_token(None, None, None) is None


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "media"
    (root / "cam").mkdir(parents=True)
    (root / "cam" / "a.mp4").write_bytes(b"x")
    (tmp_path / "media2").mkdir()
    (tmp_path / "media2" / "b.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (root / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    return tmp_path, [root]


def test_media_roots_setting(tmp_path, monkeypatch, roots):
    base, _ = roots
    s = settings(tmp_path, monkeypatch, MEDIA_ROOTS=f" {base / 'media'} {os.pathsep}{base / 'media2'}{os.pathsep}")
    assert media_roots(s) == [(base / "media").resolve(), (base / "media2").resolve()]
    assert media_roots(settings(tmp_path, monkeypatch)) == []
    with pytest.raises(ConfigError, match="nowhere"):
        media_roots(settings(tmp_path, monkeypatch, MEDIA_ROOTS=str(base / "nowhere")))


def test_check_source_files(roots):
    base, rs = roots
    inside = base / "media" / "cam" / "a.mp4"
    assert check_source(str(inside), rs) == str(inside.resolve())
    assert check_source(f"file://{inside}", rs) == str(inside.resolve())
    assert check_source(str(base / "media" / "cam" / ".." / "cam" / "a.mp4"), rs) == str(inside.resolve())
    refused = {
        "traversal": str(base / "media" / ".." / "secret.mp4"),
        "symlink out": str(base / "media" / "link.mp4"),
        "sibling prefix": str(base / "media2" / "b.mp4"),
        "relative": "media/cam/a.mp4",
        "nul": f"{inside}\x00.mp4",
    }
    for why, source in refused.items():
        with pytest.raises(MediaRootError) as info:
            check_source(source, rs)
        assert info.value.code == "outside_media_roots", why
        assert isinstance(info.value, PermissionError) and isinstance(info.value, LongwatchError)
    with pytest.raises(MediaRootError, match="--media-root") as info:
        check_source(str(inside), [])
    assert info.value.code == "files_not_allowed" and "LONGWATCH_MEDIA_ROOTS" in str(info.value)


def test_check_source_schemes(roots):
    _, rs = roots
    for url in ("rtsp://cam:${PW}@10.0.0.5/s", "rtsps://h/s", "http://h/live.m3u8", "https://h/v.mp4"):
        assert check_source(url, rs) == url
        assert check_source(url, []) == url  # network sources need no media root
    for url in ("ftp://h/v.mp4", "javascript:alert(1)", "data:video/mp4;base64,AAAA", ""):
        with pytest.raises(MediaRootError) as info:
            check_source(url, rs)
        assert info.value.code == "scheme_not_allowed", url


def access_record(full_path: str) -> logging.LogRecord:
    # exactly how uvicorn's httptools/h11 protocols log a request
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", full_path, "1.1", 200),
        None,
    )


def test_log_filter_redacts_query_tokens(caplog):
    record = access_record(f"/api/v1/events/live?stream=a&token={SECRET}&since=5")
    assert RedactTokenFilter().filter(record) is True
    message = record.getMessage()
    assert SECRET not in message
    assert message == '127.0.0.1:5555 - "GET /api/v1/events/live?stream=a&token=***&since=5 HTTP/1.1" 200'
    uvicorn_logging = pytest.importorskip("uvicorn.logging")  # its formatter still unpacks the 5 args
    formatted = uvicorn_logging.AccessFormatter(use_colors=False).format(record)
    assert "token=***&since=5" in formatted and SECRET not in formatted
    for path in (f"/x?token={SECRET}", f"/x?%74oken={SECRET}", f"/x?a=1&access_token={SECRET}#f"):
        record = access_record(path)
        RedactTokenFilter().filter(record)
        assert SECRET not in record.getMessage(), path
    record = access_record("/api/v1/streams?stream=a&tokens_per_second=2")
    RedactTokenFilter().filter(record)
    assert record.getMessage().endswith('streams?stream=a&tokens_per_second=2 HTTP/1.1" 200')

    install_log_redaction()
    install_log_redaction()
    logger = logging.getLogger("uvicorn.access")
    assert sum(isinstance(f, RedactTokenFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logger.info('%s - "%s %s HTTP/%s" %d', "10.0.0.9:1", "GET", f"/api/v1/events/live?token={SECRET}", "1.1", 200)
        logging.getLogger("uvicorn.error").warning("bad request token=%s", SECRET)
    assert "token=***" in caplog.text and SECRET not in caplog.text
