"""``[database]`` (SPEC §14): the URL, the pool settings, the password chain, never a password shown."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmupd.cli import main
from warmupd.config import parse_config
from warmupd.config_database import parse_database_url, redact_url
from warmupd.config_values import describe
from warmupd.errors import ConfigError
from warmupd.reload import split_reload

PASSWORD = "Hunter2-Very-Secret"


def test_absent_url_keeps_the_sqlite_file_with_the_documented_defaults() -> None:
    cfg = parse_config({}, env={})
    assert cfg.database.url is None
    assert not cfg.database.is_postgres
    assert (cfg.database.pool_min, cfg.database.pool_max) == (1, 10)
    assert (cfg.database.connect_timeout_ms, cfg.database.statement_timeout_ms) == (5_000, 30_000)
    assert cfg.database.statement_cache is True
    assert cfg.database.password is None


def test_a_postgres_url_and_every_key_of_the_section() -> None:
    raw = {
        "database": {
            "url": "postgres://warmupd@db.example:6432/state?sslmode=require",
            "pool_min": 2,
            "pool_max": 4,
            "connect_timeout": "2s",
            "statement_timeout": "1m",
            "statement_cache": False,
        }
    }
    cfg = parse_config(raw, env={}).database
    assert cfg.url == "postgres://warmupd@db.example:6432/state?sslmode=require"
    assert cfg.is_postgres
    assert (cfg.pool_min, cfg.pool_max, cfg.connect_timeout_ms) == (2, 4, 2_000)
    assert (cfg.statement_timeout_ms, cfg.statement_cache) == (60_000, False)


def test_password_resolution_order(tmp_path: Path) -> None:
    """$CREDENTIALS_DIRECTORY > secrets.database_password_file > _env > the URL's own."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "database_password").write_text("from-credentials\n")
    file = tmp_path / "pw"
    file.write_text("from-file\n")
    url = f"postgresql://warmupd:{quote('from-url/?@x', safe='')}@127.0.0.1:5432/warmupd"
    raw = {"database": {"url": url}, "secrets": {"database_password_file": str(file)}}
    env = {"CREDENTIALS_DIRECTORY": str(creds), "DATABASE_PASSWORD": "from-env"}

    def password(raw: dict[str, object], env: dict[str, str]) -> tuple[str | None, str]:
        cfg = parse_config(raw, env=env).database
        assert cfg.url is not None
        assert cfg.url.startswith("postgresql://warmupd@127.0.0.1")  # never with the password
        return cfg.password, cfg.password_source

    assert password(raw, env) == ("from-credentials", "credential")
    assert password(raw, {"DATABASE_PASSWORD": "from-env"}) == ("from-file", "file")
    no_file = {"database": {"url": url}}
    assert password(no_file, {"DATABASE_PASSWORD": "from-env"}) == ("from-env", "env")
    renamed = {"database": {"url": url}, "secrets": {"database_password_env": "PGPW"}}
    assert password(renamed, {"PGPW": "renamed"}) == ("renamed", "env")
    assert password(no_file, {}) == ("from-url/?@x", "url")
    bare = {"database": {"url": "postgresql://warmupd@127.0.0.1/warmupd"}}
    assert password(bare, {}) == (None, "unset")


def test_a_password_query_parameter_is_split_off_too() -> None:
    cfg = parse_config(
        {"database": {"url": f"postgresql://u@h/d?password={PASSWORD}&application_name=w"}}, env={}
    ).database
    assert cfg.password == PASSWORD
    assert cfg.url == "postgresql://u@h/d?application_name=w"


def test_check_config_shows_the_url_redacted_and_the_password_as_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("DATABASE_PASSWORD", PASSWORD)
    config = tmp_path / "warmupd.toml"
    config.write_text('[database]\nurl = "postgresql://warmupd@127.0.0.1:5432/warmupd"\n')
    assert main(["check-config", "-c", str(config), "--json", "--offline"]) == 0
    out = capsys.readouterr().out
    database = json.loads(out)["config"]["database"]
    assert database["url"] == "postgresql://warmupd@127.0.0.1:5432/warmupd"
    assert (database["password"], database["password_source"]) == ("set", "env")
    assert main(["check-config", "-c", str(config), "--offline"]) == 0
    out += capsys.readouterr().out
    assert PASSWORD not in out
    cfg = parse_config({"database": {"url": "postgresql://u@h/d"}}, env={"DATABASE_PASSWORD": "x"})
    assert PASSWORD not in repr(parse_config({}, env={"DATABASE_PASSWORD": PASSWORD}))
    assert "password=" not in repr(cfg.database).replace("password_source=", "")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"mysql://u:{PASSWORD}@h/d", "postgresql://"),
        (f"u:{PASSWORD}@h/d", "postgresql://"),
        (f"postgresql://u:{PASSWORD}@h:99999/d", "invalid port"),
        (f"postgresql://u:{PASSWORD}@/d", "must name a host"),
        (f"postgresql://u:{PASSWORD}@h o st/d", "invalid host"),
        (f"postgresql://:{PASSWORD}@h/d", "without a user"),
        (f"postgresql://u@h/d?password={PASSWORD}&x=/", "postgresql://"),  # valid: see below
    ],
)
def test_a_bad_url_names_database_url_and_never_prints_the_password(
    url: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if url.endswith("&x=/"):
        # Not an error: the password parameter is taken out, the rest is kept.
        assert parse_config({"database": {"url": url}}, env={}).database.password == PASSWORD
        return
    with pytest.raises(ConfigError) as err:
        parse_config({"database": {"url": url}}, env={})
    assert err.value.path == "database.url"
    assert reason in str(err.value)
    assert PASSWORD not in str(err.value) + repr(err.value.value)
    config = tmp_path / "warmupd.toml"
    config.write_text(f"[database]\nurl = {json.dumps(url)}\n")
    assert main(["check-config", "-c", str(config)]) == 2
    captured = capsys.readouterr()
    assert "database.url" in captured.err
    assert PASSWORD not in captured.out + captured.err


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"database": {"pool_max": 0}}, "database.pool_max"),
        ({"database": {"pool_min": 5, "pool_max": 2}}, "database.pool_min"),
        ({"database": {"connect_timeout": "soon"}}, "database.connect_timeout"),
        ({"database": {"statement_timeout": 0}}, "database.statement_timeout"),
        ({"database": {"statement_cache": "no"}}, "database.statement_cache"),
        ({"database": {"uri": "postgresql://h/d"}}, "database.uri"),
        ({"database": {"url": 5432}}, "database.url"),
    ],
)
def test_bad_values_name_their_key_path(raw: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env={})
    assert err.value.path == path


def test_an_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    raw = {
        "database": {"url": "postgresql://u@h/d"},
        "secrets": {"database_password_file": str(tmp_path / "missing")},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env={})
    assert err.value.path == "secrets.database_password_file"


def test_a_changed_database_needs_a_restart() -> None:
    running = parse_config({}, env={})
    new = parse_config({"database": {"url": "postgresql://u@h/d", "pool_max": 3}}, env={})
    applied, restart = split_reload(running, new)
    assert restart == ["database.url", "database.pool_max"]
    assert applied.database.url is None


def test_describe_never_holds_the_password() -> None:
    cfg = parse_config(
        {"database": {"url": f"postgresql://u:{quote(PASSWORD)}@h/d"}},
        env={},
    )
    assert cfg.database.password == PASSWORD
    assert PASSWORD not in json.dumps(describe(cfg))


# --------------------------------------------------------------------------- properties

_PLAIN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
# Marked and mixed-case, so no other part of a generated URL (lowercase) can contain it by chance;
# any characters at all after the marker, '@', '/', '?', ':' and '#' included.
_PASSWORDS = st.text(min_size=1, max_size=24).map(lambda s: "PW" + s)


def shown(value: str) -> str:
    """Everything an operator can see of ``value``: the parsed URL, or the config error."""
    try:
        parsed = parse_database_url("database.url", value)
    except ConfigError as exc:
        return f"{exc} {exc.path} {exc.value!r}"
    return f"{parsed.url} {parsed!r}"


@given(
    user=_PLAIN,
    password=_PASSWORDS,
    host=_PLAIN,
    port=st.integers(min_value=0, max_value=99_999),
    dbname=_PLAIN,
    encoded=st.booleans(),
    scheme=st.sampled_from(["postgresql", "postgres", "mysql", "http", ""]),
)
def test_a_url_is_never_shown_with_its_password(
    user: str, password: str, host: str, port: int, dbname: str, encoded: bool, scheme: str
) -> None:
    secret = quote(password, safe="") if encoded else password
    url = f"{scheme}://{user}:{secret}@{host}:{port}/{dbname}"
    assert secret not in redact_url(url)
    assert secret not in shown(url)
    assert password not in shown(url)
    if scheme in ("postgresql", "postgres") and 1 <= port <= 65535:
        parsed = parse_database_url("database.url", url)
        assert parsed.url == f"{scheme}://{user}@{host}:{port}/{dbname}"
        if encoded:
            # A percent-encoded password survives intact, whatever it contains.
            assert parsed.password == password


@given(text=st.text(max_size=60), password=_PASSWORDS)
def test_any_text_with_a_password_parameter_never_shows_it(text: str, password: str) -> None:
    """Malformed input too: what an error would show hides a ``password=`` value."""
    value = f"{text}?password={quote(password, safe='')}"
    assert quote(password, safe="") not in redact_url(value)
    assert quote(password, safe="") not in shown(value)
