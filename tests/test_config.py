"""Config: the example loads; every invalid value gives exit 2 and names its key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmupd.cli import main
from warmupd.config import JOB_FORECASTS, load_config, parse_config
from warmupd.config_values import describe, parse_duration_ms
from warmupd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"


def test_example_config_loads_with_the_documented_values() -> None:
    cfg = load_config(EXAMPLE, env={})
    job = cfg.jobs[JOB_FORECASTS]
    assert job.schedule == "0 2 * * *"
    assert (job.limit, job.concurrency, job.max_duration_ms) == (50, 5, 3_600_000)
    assert cfg.jobs["warmup-ai-explanations"].min_views == 10
    assert cfg.jobs["housekeeping"].run_retention_ms == 90 * 86_400_000
    assert cfg.locks.lease_ms == 60_000
    assert cfg.cache.fresh_ttl_ms == 7 * 86_400_000
    assert cfg.redis.url is None
    assert cfg.ai.provider == "builtin"
    # The example spells out the defaults: it must equal the embedded configuration.
    assert describe(cfg) | {"source": None} == describe(load_config(None, env={}))


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out
    assert "warmup-forecasts" in out


def test_check_config_json_lists_three_fires_per_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(EXAMPLE), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["nextFires"]) == {"warmup-forecasts", "warmup-ai-explanations", "housekeeping"}
    for fires in doc["nextFires"].values():
        assert len(fires) == 3
        assert all(f.endswith("Z") for f in fires)
    assert doc["config"]["secrets"]["job_secret"] in ("set", "unset")


@pytest.mark.parametrize(
    ("toml", "path"),
    [
        ('[jobs.warmup-forecasts]\nschedule = "0 25 * * *"', "jobs.warmup-forecasts.schedule"),
        ('[jobs.housekeeping]\nschedule = "every hour"', "jobs.housekeeping.schedule"),
        ('[jobs.warmup-forecasts]\ntimezone = "Mars/Olympus"', "jobs.warmup-forecasts.timezone"),
        ('[daemon]\ntimezone = "Nowhere"', "daemon.timezone"),
        ('[daemon]\nshutdown_grace = "10 parsecs"', "daemon.shutdown_grace"),
        ('[locks]\nlease = "-5s"', "locks.lease"),
        ("[locks]\nlease = 0", "locks.lease"),
        ("[jobs.warmup-forecasts]\nlimit = 0", "jobs.warmup-forecasts.limit"),
        ("[jobs.warmup-forecasts]\nconcurrency = -1", "jobs.warmup-forecasts.concurrency"),
        ('[jobs.warmup-forecasts]\nlimit = "fifty"', "jobs.warmup-forecasts.limit"),
        ("colour = 'blue'", "colour"),
        ("[http]\nprot = 8080", "http.prot"),
        ("[jobs.warmup-forecasts]\nschedul = '0 2 * * *'", "jobs.warmup-forecasts.schedul"),
        ("[jobs.nightly-backup]\nschedule = '0 1 * * *'", "jobs.nightly-backup"),
        ("[http]\nread_auth = 'yes'", "http.read_auth"),
        ("[http]\nport = 70000", "http.port"),
        ("[redis]\non_unavailable = 'ignore'", "redis.on_unavailable"),
        ("[redis]\nurl = 'http://127.0.0.1:6379'", "redis.url"),
        ("[ai]\nprovider = 'openai'", "ai.base_url"),
        ("[cache]\nfresh_ttl = '30d'\nstale_ttl = '7d'", "cache.stale_ttl"),
        (
            "[secrets]\njob_secret_file = '/nonexistent/warmupd/job_secret'",
            "secrets.job_secret_file",
        ),
        ("daemon = 5", "daemon"),
        ("[daemon\nstate_dir = 'x'", "invalid TOML"),
    ],
)
def test_invalid_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, path: str
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(toml)
    assert main(["check-config", "-c", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: ")
    assert path in err
    assert "Traceback" not in err


def test_cron_error_names_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"jobs": {"warmup-forecasts": {"schedule": "0 25 * * *"}}}, env={})
    assert "jobs.warmup-forecasts.schedule" in str(info.value)
    assert "'0 25 * * *'" in str(info.value)


@pytest.mark.parametrize(
    ("value", "policy"), [(None, "database"), ("database", "database"), ("sqlite", "database")]
)
def test_on_unavailable_database_is_the_default_and_sqlite_its_alias(
    value: str | None, policy: str
) -> None:
    # SPEC §14: the fallback is the configured state database, whichever engine holds it.
    redis = {"url": "redis://127.0.0.1:6379/0"} | ({"on_unavailable": value} if value else {})
    assert parse_config({"redis": redis}, env={}).redis.on_unavailable == policy
    skip = parse_config({"redis": {"on_unavailable": "skip"}}, env={})
    assert skip.redis.on_unavailable == "skip"
    with pytest.raises(ConfigError, match="database, sqlite, skip"):
        parse_config({"redis": {"on_unavailable": "postgresql"}}, env={})


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("15m", 900_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        (90, 90_000),
    ],
)
def test_durations(value: object, ms: int) -> None:
    assert parse_duration_ms("x", value) == ms


def test_job_timezone_defaults_to_daemon_timezone() -> None:
    cfg = parse_config({"daemon": {"timezone": "Europe/Berlin"}}, env={})
    assert cfg.jobs[JOB_FORECASTS].timezone == "Europe/Berlin"
    cfg = parse_config(
        {"daemon": {"timezone": "Europe/Berlin"}, "jobs": {JOB_FORECASTS: {"timezone": "UTC"}}},
        env={},
    )
    assert cfg.jobs[JOB_FORECASTS].timezone == "UTC"


def test_secret_resolution_order(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "job_secret").write_text("from-credentials-directory\n")
    file = tmp_path / "job_secret"
    file.write_text("from-secret-file\n")
    env = {"JOB_SECRET": "from-environment", "CREDENTIALS_DIRECTORY": str(creds)}
    raw = {"secrets": {"job_secret_file": str(file)}}
    assert parse_config(raw, env=env).secrets.job == "from-credentials-directory"
    env.pop("CREDENTIALS_DIRECTORY")
    assert parse_config(raw, env=env).secrets.job == "from-secret-file"
    cfg = parse_config({}, env=env)
    assert cfg.secrets.job == "from-environment"
    assert cfg.secrets.warmup is None
    # Empty means unset: fail closed.
    assert parse_config({}, env={"JOB_SECRET": "  "}).secrets.job is None


def test_secrets_never_appear_in_describe_or_repr() -> None:
    cfg = parse_config(
        {}, env={"JOB_SECRET": "s3cret-job-value-123", "WARMUP_SECRET": "s3cret-warm-456"}
    )
    text = json.dumps(describe(cfg)) + repr(cfg)
    assert "s3cret" not in text
    assert describe(cfg)["secrets"]["job_secret"] == "set"


def test_state_dir_unset_follows_systemd_state_directory() -> None:
    """The unit's StateDirectory= puts the DB in /var/lib/warmupd without editing the file."""
    env = {"STATE_DIRECTORY": "/var/lib/warmupd"}
    assert load_config(EXAMPLE, env=env).daemon.db_path == Path("/var/lib/warmupd/warmupd.db")
    assert load_config(EXAMPLE, env={}).daemon.state_dir == Path("./var")
    # An explicit key wins over the environment.
    cfg = parse_config({"daemon": {"state_dir": "/srv/warmupd"}}, env=env)
    assert cfg.daemon.state_dir == Path("/srv/warmupd")
    # Several state directories: the first is ours.
    assert parse_config({}, env={"STATE_DIRECTORY": "/a:/b"}).daemon.state_dir == Path("/a")


def test_check_config_reads_the_credentials_directory_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CREDENTIALS_DIRECTORY", "JOB_SECRET", "WARMUP_SECRET"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "job_secret").write_text("j" * 32)
    (tmp_path / "warmup_secret").write_text("w" * 32)
    assert main(["check-config", "-c", str(EXAMPLE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["secrets"]["job_secret"] == "unset"
    args = ["check-config", "-c", str(EXAMPLE), "--json", "--credentials-directory", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    secrets = json.loads(out)["config"]["secrets"]
    assert (secrets["job_secret"], secrets["job_secret_source"]) == ("set", "credential")
    assert (secrets["warmup_secret"], secrets["warmup_secret_source"]) == ("set", "credential")
    assert "j" * 32 not in out
    # Without the flag, $CREDENTIALS_DIRECTORY is the default, as in the service.
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert main(["check-config", "-c", str(EXAMPLE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["secrets"]["warmup_secret"] == "set"
