"""sd_notify against real AF_UNIX datagram sockets (a path and an abstract name)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warmupd.systemd import SystemdNotifier, journal_stream, watchdog_loop


class _Stop(Exception):
    """Ends an otherwise endless loop under test."""


class StepClock:
    """A fake clock whose ``sleep`` advances time and records the request, up to ``max_sleeps``."""

    def __init__(self, max_sleeps: int) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.max_sleeps = max_sleeps

    def wall_ms(self) -> int:
        return int(self.now * 1000)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if len(self.sleeps) == self.max_sleeps:
            raise _Stop
        self.sleeps.append(seconds)
        self.now += seconds


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)  # a missing datagram fails the test instead of hanging it
    return sock


def _drain(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = _receiver(path)
    yield path, sock
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"warmupd-test-{os.getpid()}-{secrets.token_hex(4)}"
    sock = _receiver("\0" + name)
    yield "@" + name, sock
    sock.close()


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_messages_arrive_exactly_and_in_order(which: str, request: pytest.FixtureRequest) -> None:
    address, sock = request.getfixturevalue(which)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled

    assert notifier.ready()
    assert notifier.status("idle; next warmup-forecasts 02:00Z")
    assert notifier.watchdog()
    before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.ready(status="reloaded")
    assert notifier.stopping()
    notifier.close()

    got = [sock.recv(4096) for _ in range(6)]
    assert got[0] == b"READY=1"
    assert got[1] == b"STATUS=idle; next warmup-forecasts 02:00Z"
    assert got[2] == b"WATCHDOG=1"
    reloading, monotonic = got[3].split(b"\n")
    assert reloading == b"RELOADING=1"
    key, _, value = monotonic.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before_usec <= int(value) <= after_usec
    assert got[4] == b"READY=1\nSTATUS=reloaded"
    assert got[5] == b"STOPPING=1"
    assert _drain(sock) == []


def test_waiting_extends_the_start_timeout_in_the_status_datagram(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.waiting("waiting for the state database\nREADY=1", 33.5)
    notifier.close()
    assert sock.recv(4096) == (
        b"STATUS=waiting for the state database READY=1\nEXTEND_TIMEOUT_USEC=33500000"
    )


def test_status_newlines_cannot_inject_assignments(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    notifier.status("failed\nREADY=1")
    notifier.close()
    assert sock.recv(4096) == b"STATUS=failed READY=1"


def test_without_notify_socket_everything_is_a_noop() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.reloading()
    assert not notifier.stopping()
    assert notifier.watchdog_interval_s() is None


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/path", "@", ""])
def test_unsupported_addresses_disable_the_notifier(value: str) -> None:
    assert not SystemdNotifier({"NOTIFY_SOCKET": value}).enabled


def test_reads_os_environ_by_default(
    path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    notifier = SystemdNotifier()
    assert notifier.ready()
    notifier.close()
    assert sock.recv(4096) == b"READY=1"


def test_a_vanished_manager_does_not_raise(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    sock = _receiver(str(path))
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.ready()
    sock.close()
    path.unlink()
    assert not notifier.watchdog()
    # The socket is reopened lazily after close(); still no exception.
    notifier.close()
    assert not notifier.stopping()
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert SystemdNotifier(env).watchdog_interval_s() == expected


async def test_watchdog_loop_pings_each_half_interval(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000000"})
    clock = StepClock(max_sleeps=3)
    with pytest.raises(_Stop):
        await watchdog_loop(notifier, clock)
    notifier.close()
    # ping, sleep, ping, sleep, ping, sleep, ping -> stop on the fourth sleep
    assert clock.sleeps == [10.0, 10.0, 10.0]
    assert _drain(sock) == [b"WATCHDOG=1"] * 4


async def test_watchdog_loop_returns_when_watchdog_is_off(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    clock = StepClock(max_sleeps=0)
    await watchdog_loop(notifier, clock)
    notifier.close()
    assert clock.sleeps == []
    assert _drain(sock) == []


def test_journal_stream_sends_journald_stream_header_then_lines(tmp_path: Path) -> None:
    """sd_journal_stream_fd's protocol: seven header lines, then one record per line."""
    path = tmp_path / "stdout"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        stream = journal_stream("warmupd", 2, path=str(path))
        assert stream is not None
        conn, _ = server.accept()
        stream.sendall(b"Fatal Python error: Aborted\n<4>a prefixed line\n")
        stream.close()
        received = b""
        while chunk := conn.recv(4096):
            received += chunk
        conn.close()
    finally:
        server.close()
    # identifier, unit (journald derives it), priority crit, level prefixes honoured, no forwarding
    assert received == (
        b"warmupd\n\n2\n1\n0\n0\n0\nFatal Python error: Aborted\n<4>a prefixed line\n"
    )


def test_journal_stream_is_none_without_journald(tmp_path: Path) -> None:
    assert journal_stream("warmupd", 4, path=str(tmp_path / "absent")) is None
