"""Run as deployed (issue 17): warmupd installed as docs/OPERATIONS.md says, under a real systemd.

A Debian 12 container (tests/systemd_container.py) is booted with systemd-nspawn, with loopback-only
networking, on a throw-away overlay of a cached debootstrap image. warmupd is installed into it
step by step as the install guide says — a venv from the system Python at /opt/warmupd/venv, the
config in /etc/warmupd, credential files, the shipped unit, ``systemctl enable --now`` — and then
driven through the operator's tools: ``systemctl``, ``journalctl``, the ``warmupd`` CLI and curl.

The tests share one booted container and run in file order: a fresh install first (restarts must
record no misfire), the journal audit and the final stop last. Cached, the module takes about two
minutes; the first run also pays for debootstrap (~3 minutes) and the wheel downloads.

When ``CI`` is set and the container cannot be booted, the tests fail instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.systemd_container import (
    PROJECT,
    Container,
    base_image,
    image_python_version,
    why_not_bootable,
)
from tests.systemd_container import wheelhouse as build_wheelhouse

pytestmark = [pytest.mark.systemd, pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = "/etc/warmupd/warmupd.toml"
DB = "/var/lib/warmupd/warmupd.db"
URL = "http://127.0.0.1:8321"
DEMO_COUNT = 12
WATCHDOG_DROPIN = "/etc/systemd/system/warmupd.service.d/watchdog-test.conf"
NO_SETPRIORITY_DROPIN = "/etc/systemd/system/warmupd.service.d/no-setpriority-test.conf"

# The operator's install, as docs/OPERATIONS.md §1 writes it (sudo dropped: we are root inside).
# The only departure: pip installs from the wheelhouse the test built, because the container has no
# network (`--no-index --find-links`), which is what an offline install looks like.
INSTALL = """
python3 -m venv /opt/warmupd/venv
/opt/warmupd/venv/bin/pip install -q --no-index --find-links /wheelhouse --upgrade pip
/opt/warmupd/venv/bin/pip install -q --no-index --find-links /wheelhouse warmupd
ln -sf /opt/warmupd/venv/bin/warmupd /usr/local/bin/warmupd
install -d -m 0755 /etc/warmupd
install -m 0644 /stage/warmupd.toml /etc/warmupd/warmupd.toml
warmupd check-config -c /etc/warmupd/warmupd.toml >/dev/null
umask 077
python3 -c 'import secrets; print(secrets.token_urlsafe(32), end="")' | tee /etc/warmupd/job_secret >/dev/null
python3 -c 'import secrets; print(secrets.token_urlsafe(32), end="")' | tee /etc/warmupd/warmup_secret >/dev/null
chmod 0600 /etc/warmupd/job_secret /etc/warmupd/warmup_secret
install -m 0644 /stage/warmupd.service /etc/systemd/system/warmupd.service
systemctl daemon-reload
systemctl enable --now warmupd
"""


def _config_text() -> str:
    """config.example.toml with the edits this test makes as an operator would.

    The housekeeping schedule moves to a time that cannot come up during the test, so that "no
    run was started" after the restarts means no *unplanned* run; state_dir stays unset (the unit's
    $STATE_DIRECTORY puts the DB in /var/lib/warmupd).
    """
    text = (PROJECT / "config.example.toml").read_text()
    assert 'schedule = "17 * * * *"' in text
    text = text.replace('schedule = "17 * * * *"', 'schedule = "17 3 1 1 *"')
    assert 'state_dir = "./var"' not in text.replace('# state_dir = "./var"', "")
    return text


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    reason = why_not_bootable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the systemd boot test must run in CI: {reason}")
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("systemd-boot")
    log = work / "build.log"
    try:
        image = base_image(log)
        house = build_wheelhouse(log, work, image_python_version(image))
    except Exception:
        print(log.read_text(errors="replace")[-5000:] if log.exists() else "(no build log)")
        raise
    stage = work / "stage"
    stage.mkdir()
    (stage / "warmupd.toml").write_text(_config_text())
    shutil.copy(PROJECT / "systemd" / "warmupd.service", stage / "warmupd.service")
    container = Container(image, work, binds=[(house, "/wheelhouse"), (stage, "/stage")])
    try:
        container.boot()
        container.sh(INSTALL, timeout_s=600)
        yield container
    finally:
        if container.init_pid is not None:
            print(container.run("journalctl", "-u", "warmupd", "-o", "cat", check=False).stdout)
        container.poweroff()


# --------------------------------------------------------------------------- helpers


def show(box: Container, *props: str) -> dict[str, str]:
    """``systemctl show warmupd -p …`` as a dict."""
    args = [arg for prop in props for arg in ("-p", prop)]
    out = box.run("systemctl", "show", "warmupd", *args).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def api(box: Container, path: str) -> Any:
    """GET ``path`` from the daemon with curl inside the container; the JSON answer."""
    return json.loads(box.sh(f"curl -sS '{URL}{path}'"))


def runs(box: Container) -> list[dict[str, Any]]:
    """Every run record, newest first."""
    return list(api(box, "/api/jobs/runs?limit=500")["runs"])


def journal(box: Container, *args: str) -> list[dict[str, Any]]:
    """The unit's journal entries as JSON objects."""
    out = box.run("journalctl", "-u", "warmupd", "-o", "json", "--no-pager", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def message(entry: dict[str, Any]) -> str:
    raw = entry.get("MESSAGE", "")
    return raw if isinstance(raw, str) else bytes(raw).decode(errors="replace")


def wait_for(predicate: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Poll until ``predicate()`` is truthy (a bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        time.sleep(0.2)


def load_demo_data(box: Container) -> None:
    """demo-data into the service's DB: stop, write as root, hand the files back, start.

    As OPERATIONS.md §4 says for a restore: with DynamicUser=yes the state directory belongs to a
    transient user, so files root writes there are chowned back before the service starts again.
    """
    box.sh(
        f"""
        systemctl stop warmupd
        STATE_DIRECTORY=/var/lib/warmupd warmupd demo-data -c {CONFIG} --count {DEMO_COUNT} --seed 7
        chown -R --reference=/var/lib/private/warmupd /var/lib/private/warmupd
        systemctl start warmupd
        """
    )


# --------------------------------------------------------------------------- tests (file order)


def test_start_returns_after_ready_with_a_status_line(box: Container) -> None:
    props = show(box, "ActiveState", "SubState", "StatusText", "Type", "ExecMainPID")
    # Type=notify: `enable --now` returned, so systemd had READY=1; STATUS= was in that datagram.
    assert (props["Type"], props["ActiveState"], props["SubState"]) == (
        "notify",
        "active",
        "running",
    )
    assert props["StatusText"].startswith("idle; next "), props
    assert "nothing scheduled" not in props["StatusText"]
    assert box.sh(f"curl -s -o /dev/null -w '%{{http_code}}' {URL}/readyz") == "200"
    # The DB landed where the docs say, without editing state_dir.
    box.sh(f"test -f {DB} && test -L /var/lib/warmupd")


def test_three_restarts_of_a_fresh_install_record_no_misfire(box: Container) -> None:
    for _ in range(3):
        box.run("systemctl", "restart", "warmupd")
        assert show(box, "ActiveState")["ActiveState"] == "active"
    assert runs(box) == []  # no misfire record and no unplanned (catch-up) run
    assert not [e for e in journal(box) if "scheduler.misfired" in message(e)]
    last = box.sh(f"sqlite3 {DB} 'SELECT job, last_fire_at IS NULL FROM schedule_state'")
    assert last.split(), "schedule_state holds no row"
    assert all(line.endswith("|1") for line in last.split()), last  # still "never fired"


def test_security_exposure_at_most_2_for_the_installed_unit(box: Container) -> None:
    out = box.run("systemd-analyze", "security", "--no-pager", "warmupd.service").stdout
    match = re.search(r"Overall exposure level for warmupd\.service: (\d+\.\d+)", out)
    assert match is not None, out[-2000:]
    assert float(match.group(1)) <= 2.0, out[-2000:]


def test_forecast_run_succeeds_inside_the_sandbox(box: Container) -> None:
    load_demo_data(box)
    out = box.sh(
        f"JOB_SECRET=$(cat /etc/warmupd/job_secret) "
        f"warmupd trigger warmup-forecasts --wait --json -c {CONFIG}",
        timeout_s=300,
    )
    run = json.loads(out)
    assert run["status"] == "success", run
    # Every forecast is computed in a pool worker: processed items mean workers started and ran
    # under the unit's seccomp filter, MemoryDenyWriteExecute and the rest.
    assert (run["processed"], run["failed"]) == (DEMO_COUNT, 0), run
    # The workers (idle now, they stay for pool_idle_shutdown) run at nice +10: the unit allows
    # setpriority back after denying @resources.
    workers = box.sh("ps -o ni= -o args= -C python3 | grep '[s]pawn_main' || true").split("\n")
    assert [w.split()[0] for w in workers if w.strip()] == ["10"] * len(
        [w for w in workers if w.strip()]
    )
    assert any(w.strip() for w in workers), "no pool worker alive after the run"


def test_the_pool_computes_where_setpriority_is_refused(box: Container) -> None:
    """The unit's filter without its setpriority exception (the unit before issue 17, or an
    operator's stricter drop-in): lowering the worker priority is best-effort, the pool computes."""
    box.sh(
        f"""
        mkdir -p {os.path.dirname(NO_SETPRIORITY_DROPIN)}
        printf '[Service]\\nSystemCallFilter=\\nSystemCallFilter=@system-service\\nSystemCallFilter=~@privileged @resources\\n' > {NO_SETPRIORITY_DROPIN}
        systemctl daemon-reload
        systemctl restart warmupd
        """
    )
    filtered = show(box, "SystemCallFilter")["SystemCallFilter"]
    assert not filtered.startswith("~")  # an allow-list (@system-service minus the denied sets)
    assert "setpriority" not in filtered.split()  # without setpriority: refused with EPERM
    slug = box.sh(f"sqlite3 {DB} 'SELECT slug FROM comparisons ORDER BY slug LIMIT 1 OFFSET 1'")
    slug = slug.strip()
    box.sh(f"sqlite3 {DB} \"UPDATE cache_entries SET fresh_until = 0 WHERE slug = '{slug}'\"")
    box.sh(f"WARMUP_SECRET=$(cat /etc/warmupd/warmup_secret) warmupd warmup {slug} -c {CONFIG}")

    def state() -> str | None:
        state = api(box, f"/api/comparison/{slug}/status").get("warmup")
        return state if state in ("ready", "failed") else None

    assert wait_for(state, f"warmup of {slug} finished", timeout_s=120) == "ready"
    workers = box.sh("ps -o ni= -o args= -C python3 | grep '[s]pawn_main' || true").split("\n")
    nice = [w.split()[0] for w in workers if w.strip()]
    assert nice, "the warmup computed without starting pool workers"
    assert set(nice) == {"0"}  # the workers ran, at the daemon's priority
    box.sh(f"rm {NO_SETPRIORITY_DROPIN} && systemctl daemon-reload && systemctl restart warmupd")


def test_credentials_from_load_credential_work(box: Container) -> None:
    # The service reads the secrets systemd copied; the unit sets no JOB_SECRET variable.
    env = box.sh("tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value warmupd)/environ")
    assert "CREDENTIALS_DIRECTORY=/run/credentials/warmupd.service" in env
    assert "JOB_SECRET" not in env
    right = box.sh(
        f"curl -s -o /dev/null -w '%{{http_code}}' -X POST "
        f'-H "X-Job-Secret: $(cat /etc/warmupd/job_secret)" {URL}/api/jobs/housekeeping'
    )
    wrong = box.sh(
        f"curl -s -o /dev/null -w '%{{http_code}}' -X POST "
        f"-H 'X-Job-Secret: not-the-secret-not-the-secret' {URL}/api/jobs/housekeeping"
    )
    assert (right, wrong) in {("202", "401"), ("202", "403"), ("200", "401"), ("200", "403")}
    # check-config sees what the service sees, given the service's credentials directory.
    doc = json.loads(
        box.sh(
            f"warmupd check-config --json -c {CONFIG} "
            "--credentials-directory /run/credentials/warmupd.service"
        )
    )
    secrets = doc["config"]["secrets"]
    assert (secrets["job_secret"], secrets["job_secret_source"]) == ("set", "credential")
    assert (secrets["warmup_secret"], secrets["warmup_secret_source"]) == ("set", "credential")


def test_on_demand_warmup_reaches_ready(box: Container) -> None:
    slug = box.sh(f"sqlite3 {DB} 'SELECT slug FROM comparisons ORDER BY slug LIMIT 1'").strip()
    assert slug
    box.sh(f"WARMUP_SECRET=$(cat /etc/warmupd/warmup_secret) warmupd warmup {slug} -c {CONFIG}")

    def state() -> str | None:
        state = api(box, f"/api/comparison/{slug}/status").get("warmup")
        return state if state in ("ready", "failed") else None

    assert wait_for(state, f"warmup of {slug} finished", timeout_s=120) == "ready"


def test_a_failing_run_shows_at_priority_warning(box: Container) -> None:
    # An AI server that is not there: every item of the AI job fails.
    box.sh(
        f"""
        cp {CONFIG} /root/warmupd.toml.good
        python3 - <<'EOF'
p = "{CONFIG}"
s = open(p).read()
s = s.replace('provider = "builtin"', 'provider = "openai"\\nbase_url = "http://127.0.0.1:9/v1"\\nmodel = "none"')
s = s.replace("max_retries = 3", "max_retries = 0").replace("min_views = 10", "min_views = 0")
open(p, "w").write(s)
EOF
        systemctl restart warmupd
        """
    )
    out = box.sh(
        "JOB_SECRET=$(cat /etc/warmupd/job_secret) "
        f"warmupd trigger warmup-ai-explanations --wait --json -c {CONFIG} || true",
        timeout_s=300,
    )
    assert json.loads(out)["status"] == "failed"
    shown = box.run("journalctl", "-u", "warmupd", "-p", "warning", "-o", "cat").stdout
    assert re.search(r"ERROR run\.finished job=warmup-ai-explanations .*status=failed", shown)
    box.sh(f"cp /root/warmupd.toml.good {CONFIG} && systemctl restart warmupd")


def _housekeeping_schedule(box: Container) -> str:
    jobs = api(box, "/api/jobs")
    jobs = jobs["jobs"] if isinstance(jobs, dict) else jobs
    return str(next(j for j in jobs if j["name"] == "housekeeping")["schedule"])


def test_reload_applies_a_schedule_change_and_keeps_the_old_config_on_an_invalid_one(
    box: Container,
) -> None:
    assert _housekeeping_schedule(box) == "17 3 1 1 *"
    pid = show(box, "MainPID")["MainPID"]
    box.sh(f'sed -i \'s/"17 3 1 1 \\*"/"19 3 1 1 *"/\' {CONFIG} && systemctl reload warmupd')
    # systemd 252 returns from reload once SIGHUP is sent; the daemon applies it just after.
    wait_for(lambda: _housekeeping_schedule(box) == "19 3 1 1 *", "schedule reloaded", 30)
    box.sh(f"cp {CONFIG} /root/warmupd.toml.good && echo '[daemon' >> {CONFIG}")
    box.run("systemctl", "reload", "warmupd")
    wait_for(
        lambda: any("reload" in message(e) and int(e["PRIORITY"]) <= 3 for e in journal(box)),
        "the invalid config is reported at error",
        30,
    )
    assert _housekeeping_schedule(box) == "19 3 1 1 *"
    assert show(box, "ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": pid}
    box.sh(f"cp /root/warmupd.toml.good {CONFIG} && systemctl reload warmupd")


def test_the_watchdog_restarts_a_stopped_daemon(box: Container) -> None:
    box.sh(
        f"""
        mkdir -p {os.path.dirname(WATCHDOG_DROPIN)}
        printf '[Service]\\nWatchdogSec=4s\\nTimeoutAbortSec=3s\\nRestartSec=1s\\n' > {WATCHDOG_DROPIN}
        systemctl daemon-reload
        systemctl restart warmupd
        """
    )
    props = show(box, "WatchdogUSec", "MainPID", "NRestarts")
    assert props["WatchdogUSec"] == "4s"
    # Armed: systemd has received WATCHDOG=1 from the event loop.
    wait_for(lambda: show(box, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"] != "0",
             "a watchdog ping", 10)  # fmt: skip
    box.run("kill", "-STOP", props["MainPID"])

    def restarted() -> bool:
        now = show(box, "MainPID", "NRestarts", "ActiveState")
        return (
            now["ActiveState"] == "active"
            and now["MainPID"] not in ("0", props["MainPID"])
            and int(now["NRestarts"]) > int(props["NRestarts"])
        )

    wait_for(restarted, "restart by the watchdog", 60)
    assert [e for e in journal(box) if "Watchdog timeout" in message(e)]
    box.sh(f"rm {WATCHDOG_DROPIN} && systemctl daemon-reload && systemctl restart warmupd")


def test_stop_leaves_nothing_for_systemd_to_kill(box: Container) -> None:
    # The pool is in use when the stop comes: stale forecasts make the run compute again.
    box.sh(f"sqlite3 {DB} 'UPDATE cache_entries SET fresh_until = 0, stale_until = 0'")
    cursor = box.sh("journalctl -u warmupd -n 0 --show-cursor | sed -n 's/^-- cursor: //p'").strip()
    box.sh(
        "JOB_SECRET=$(cat /etc/warmupd/job_secret) "
        f"warmupd trigger warmup-forecasts -c {CONFIG} >/dev/null"
    )
    wait_for(
        lambda: box.run("pgrep", "-f", "multiprocessing.resource_tracker", check=False).stdout,
        "the pool started (its resource tracker runs)",
        60,
    )
    box.run("systemctl", "stop", "warmupd")
    props = show(box, "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    since = [message(e) for e in journal(box, f"--after-cursor={cursor}")]
    assert not [m for m in since if "Killing process" in m or "left-over process" in m], since
    box.run("systemctl", "start", "warmupd")


def test_every_journal_line_of_the_unit_is_one_record_with_its_priority(box: Container) -> None:
    record = re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    )
    priority_of = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
    bad = []
    for entry in journal(box):
        if entry.get("SYSLOG_IDENTIFIER") == "systemd":
            continue
        text, priority = message(entry), int(entry.get("PRIORITY", 6))
        match = record.match(text)
        if match is not None:
            if priority != priority_of[match.group(1)]:
                bad.append((priority, text))
        elif priority > 4:
            # Raw output (a dump from faulthandler, the resource tracker's complaints) is allowed
            # only on the streams that give it a priority: crit and warning.
            bad.append((priority, text))
    assert not bad, bad[:20]
    tracebacks = [e for e in journal(box) if message(e).startswith("Traceback")]
    assert all(int(e["PRIORITY"]) <= 4 for e in tracebacks)
