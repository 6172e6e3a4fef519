"""Config of the job kinds: per-kind validation with key paths, the example's jobs, check-config."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from warmupd.cli import main
from warmupd.config import parse_config
from warmupd.config_kinds import CommandKind, HttpKind
from warmupd.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"

HTTP = {"kind": "http", "schedule": "@hourly", "urls": ["https://www.example.com/"]}
COMMAND = {"kind": "command", "schedule": "0 3 * * *", "command": ["/bin/true"]}


def job(name: str, table: dict[str, Any]) -> Any:
    return parse_config({"jobs": {name: table}}, env={}).jobs[name]


def error(name: str, table: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"jobs": {name: table}}, env={})
    return str(info.value)


def test_http_job_with_every_key() -> None:
    cfg = job(
        "warm-site",
        {
            **HTTP,
            "sitemap": "https://www.example.com/sitemap.xml",
            "method": "HEAD",
            "headers": {"Accept-Language": "en"},
            "headers_env": {"Authorization": "CDN_TOKEN"},
            "expect": [200, "300-399"],
            "concurrency": 4,
            "per_host_concurrency": 2,
            "rate": "120/m",
            "allow_hosts": ["CDN.example.com"],
            "limit": 500,
            "item_timeout": "5s",
            "timezone": "Europe/Berlin",
        },
    )
    assert cfg.kind == "http"
    spec = cfg.spec
    assert isinstance(spec, HttpKind)
    assert spec.rate_per_s == 2.0
    assert spec.allow_hosts == ("cdn.example.com",)
    assert spec.expected(200)
    assert spec.expected(301)
    assert not spec.expected(204)
    assert (cfg.concurrency, cfg.limit, cfg.item_timeout_ms) == (4, 500, 5_000)
    defaults = job("plain", HTTP)
    assert (defaults.concurrency, defaults.limit) == (8, 100_000)
    assert defaults.spec.expected(399)
    assert not defaults.spec.expected(404)


def test_command_job_with_every_key() -> None:
    cfg = job(
        "nightly",
        {
            **COMMAND,
            "command": ["sh", "-c", "echo hi"],
            "working_dir": "/srv",
            "env": {"TARGET": "eu"},
            "success_exit_codes": [0, 3],
            "max_duration": "10m",
        },
    )
    assert cfg.kind == "command"
    assert cfg.spec == CommandKind(
        command=("sh", "-c", "echo hi"),
        working_dir="/srv",
        env={"TARGET": "eu"},
        success_exit_codes=(0, 3),
    )
    assert cfg.max_duration_ms == 600_000


@pytest.mark.parametrize(
    ("name", "table", "expected"),
    [
        ("nightly", {**COMMAND, "command": "rm -rf /tmp/x"}, "jobs.nightly.command: must be a list"),
        ("nightly", {**COMMAND, "command": []}, "jobs.nightly.command: must not be empty"),
        ("nightly", {**COMMAND, "command": [""]}, "jobs.nightly.command[0]: must not be empty"),
        ("nightly", {**COMMAND, "command": ["x", 3]}, "jobs.nightly.command[1]: must be a string"),
        ("nightly", {"kind": "command", "schedule": "@daily"}, "jobs.nightly.command: is required"),
        ("nightly", {**COMMAND, "urls": []}, "jobs.nightly.urls: does not belong to a job of kind 'command'"),
        ("nightly", {**COMMAND, "concurrency": 2}, "jobs.nightly.concurrency: does not belong"),
        ("nightly", {**COMMAND, "env": {"WARMUPD_JOB": "x"}}, "jobs.nightly.env.WARMUPD_JOB: WARMUPD_* variables are set by warmupd"),
        ("nightly", {**COMMAND, "env": {"1BAD": "x"}}, "jobs.nightly.env.1BAD: is not a valid variable name"),
        ("nightly", {**COMMAND, "success_exit_codes": [256]}, "jobs.nightly.success_exit_codes[0]: must be between 0 and 255"),
        ("site", {**HTTP, "window": "7d"}, "jobs.site.window: does not belong to a job of kind 'http'"),
        ("site", {**HTTP, "command": ["x"]}, "jobs.site.command: does not belong to a job of kind 'http'"),
        ("site", {"kind": "http", "schedule": "@daily"}, "jobs.site.urls: a job of kind 'http' needs urls or sitemap"),
        ("site", {**HTTP, "urls": ["ftp://example.com/"]}, "jobs.site.urls[0]: must be a URL starting with http or https://"),
        ("site", {**HTTP, "urls": ["https:///nohost"]}, "jobs.site.urls[0]: must be a URL with a host"),
        ("site", {**HTTP, "sitemap": 3}, "jobs.site.sitemap: must be a string"),
        ("site", {**HTTP, "method": "POST"}, "jobs.site.method: must be one of GET, HEAD"),
        ("site", {**HTTP, "rate": "fast"}, "jobs.site.rate: must be a positive rate such as '20/s'"),
        ("site", {**HTTP, "rate": "0/s"}, "jobs.site.rate: must be a positive rate"),
        ("site", {**HTTP, "expect": ["2xx"]}, "jobs.site.expect[0]: must be a status code"),
        ("site", {**HTTP, "expect": ["399-200"]}, "jobs.site.expect[0]: must be status codes within 100-599, low to high"),
        ("site", {**HTTP, "headers": {"Bad Name": "x"}}, "jobs.site.headers.Bad Name: is not a valid header name"),
        ("site", {**HTTP, "headers": {"X-A": "a\r\nX-B: b"}}, "jobs.site.headers.X-A: must not contain line breaks"),
        ("site", {**HTTP, "headers_env": {"Authorization": "not a var"}}, "jobs.site.headers_env.Authorization: must be the name of an environment variable"),
        ("site", {**HTTP, "headers_env": []}, "jobs.site.headers_env: must be a table"),
        ("site", {**HTTP, "per_host_concurrency": 0}, "jobs.site.per_host_concurrency: must be between 1 and 256"),
        ("site", {**HTTP, "allow_hosts": ["*.example.com"]}, "jobs.site.allow_hosts[0]: must be a host name"),
        ("site", {**HTTP, "allow_hosts": "example.com"}, "jobs.site.allow_hosts: must be a list"),
        ("site", {**HTTP, "schedule": "0 25 * * *"}, "jobs.site.schedule: invalid"),
        ("site", {"kind": "http", "urls": ["https://a.example/"]}, "jobs.site.schedule: is required for a job of kind 'http'"),
        ("site", {**HTTP, "kind": "ftp"}, "jobs.site.kind: must be one of http, command"),
        ("site", {"schedule": "@daily"}, "jobs.site.kind: unknown job: set kind = 'http' or 'command'"),
        ("Bad.Name", HTTP, "jobs.Bad.Name: a job name is 1-64 characters"),
        ("warmup-on-demand", HTTP, "jobs.warmup-on-demand: is the on-demand warmup's name"),
        ("housekeeping", {"kind": "command"}, "jobs.housekeeping.kind: a built-in job keeps its kind"),
    ],
)  # fmt: skip
def test_each_invalid_value_names_its_key_path(
    name: str, table: dict[str, Any], expected: str
) -> None:
    message = error(name, table)
    assert message.startswith(f"config error: {expected}"), message


def test_a_string_command_is_refused_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "warmupd.toml"
    file.write_text('[jobs.nightly]\nkind = "command"\nschedule = "@daily"\ncommand = "ls -l"\n')
    assert main(["check-config", "-c", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "jobs.nightly.command" in err
    assert "Traceback" not in err


def example_jobs() -> str:
    """The commented kind examples of config.example.toml, uncommented."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [jobs.warm-site]"))
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(re.sub(r"^# ?", "", line))
    return "\n".join(block)


def test_the_examples_in_config_example_are_valid_and_show_each_kind() -> None:
    raw = tomllib.loads(example_jobs())
    cfg = parse_config(raw, env={})
    assert cfg.jobs["warm-site"].kind == "http"
    assert cfg.jobs["rebuild-search-index"].kind == "command"
    assert isinstance(cfg.jobs["rebuild-search-index"].spec, CommandKind)


def test_check_config_shows_the_next_fires_of_kind_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "warmupd.toml"
    file.write_text(EXAMPLE.read_text() + "\n" + example_jobs() + "\n")
    assert main(["check-config", "-c", str(file), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["nextFires"]["warm-site"][0].endswith("T04:30:00.000Z")
    assert len(doc["nextFires"]["rebuild-search-index"]) == 3
    site = doc["config"]["jobs"]["warm-site"]
    assert site["kind"] == "http"
    assert site["spec"]["headers_env"] == {"Authorization": "CDN_WARM_TOKEN"}
    assert main(["check-config", "-c", str(file)]) == 0
    out = capsys.readouterr().out
    assert "  rebuild-search-index [0 3 * * * UTC]" in out
    assert "  warm-site [30 4 * * * UTC]" in out


def test_reload_applies_a_changed_kind_job_but_refuses_a_new_one(tmp_path: Path) -> None:
    from warmupd.config import load_config
    from warmupd.wiring import ConfigHolder

    file = tmp_path / "warmupd.toml"
    file.write_text(
        '[jobs.site]\nkind = "http"\nschedule = "@daily"\nurls = ["https://a.example/"]\n'
    )
    holder = ConfigHolder(load_config(file, env={}), str(file))
    file.write_text(
        '[jobs.site]\nkind = "http"\nschedule = "@hourly"\nurls = ["https://b.example/"]\n'
    )
    new = holder.reload()
    assert new is not None
    assert new.jobs["site"].schedule == "@hourly"
    assert holder().jobs["site"].spec == HttpKind(urls=("https://b.example/",))
    file.write_text(
        file.read_text()
        + '[jobs.more]\nkind = "command"\nschedule = "@daily"\ncommand = ["true"]\n'
    )
    assert holder.reload() is None
    assert "more" not in holder().jobs
    file.write_text('[jobs.site]\nkind = "command"\nschedule = "@daily"\ncommand = ["true"]\n')
    assert holder.reload() is None
    assert holder().jobs["site"].kind == "http"
