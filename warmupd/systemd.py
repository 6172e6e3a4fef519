"""The systemd notification protocol (``sd_notify``) in pure stdlib.

systemd hands a ``Type=notify`` service the address of a datagram socket in ``$NOTIFY_SOCKET``; the
service sends newline-separated ``KEY=VALUE`` assignments to it (``READY=1``, ``STATUS=…``,
``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``). Without the variable (a developer's shell, the
test suite) every call is a no-op, so the daemon never needs to know whether it runs under systemd.

We do not depend on ``python-systemd``/``sdnotify``: the protocol is one ``sendto`` of a datagram,
and a C extension for that would be a dependency to build and audit for nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from warmupd.clock import Clock

__all__ = ["JOURNAL_STDOUT", "SystemdNotifier", "journal_stream", "watchdog_loop"]

JOURNAL_STDOUT = "/run/systemd/journal/stdout"
"""journald's stream socket: what systemd connects a service's stdout/stderr to."""


def _socket_address(raw: str) -> str | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or None when it is unusable.

    A leading ``@`` names a socket in the Linux abstract namespace, which the kernel addresses with
    a leading NUL byte. Anything that is neither a path nor an abstract name (e.g. ``vsock:`` from
    newer systemd for VMs) is not supported here, like libsystemd's ``-EAFNOSUPPORT``.
    """
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    return None


class SystemdNotifier:
    """Sends state notifications to the service manager.

    Sending never blocks and never raises: the socket is non-blocking and a failed send (no
    listener, full queue) returns False. Notifications are advisory; a daemon must not die because
    its supervisor cannot hear it — if systemd really stops hearing ``WATCHDOG=1`` it restarts us,
    which is the correct outcome anyway.

    The notifier is used from the event-loop thread only.

    :param environ: where to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``
        (default ``os.environ``); read once, at construction.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` names a usable socket."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``assignments`` (``"KEY=VALUE"`` strings) as one datagram.

        One datagram makes the assignments atomic for systemd (``RELOADING=1`` must arrive together
        with its ``MONOTONIC_USEC``).

        :returns: True when the datagram was handed to the kernel; False when disabled or the send
            failed.
        """
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self._address)
        except OSError:
            # ENOENT/ECONNREFUSED (manager gone), EAGAIN (its queue is full): drop the message; see
            # the class docstring for why this is not an error.
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (start-up finished or a reload completed), optionally with a ``STATUS=``."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """``STATUS=text``: the one-line status ``systemctl status`` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def waiting(self, text: str, extend_s: float) -> bool:
        """``STATUS=text`` with ``EXTEND_TIMEOUT_USEC=``, in one datagram: start-up is waiting.

        The start timeout (``TimeoutStartSec=``) is extended by ``extend_s`` from now, so systemd
        does not kill a daemon that is still actively waiting for a dependency; one that stops
        sending these (stuck) is killed when the last extension lapses. systemd < 236 ignores it.
        """
        usec = max(1, int(extend_s * 1_000_000))
        return self.notify(f"STATUS={_one_line(text)}", f"EXTEND_TIMEOUT_USEC={usec}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping."""
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` of now, in one datagram.

        systemd ≥ 253 uses the timestamp to tell this reload from an earlier one; older versions
        ignore it. The daemon sends :meth:`ready` when the reload is done, successful or not.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify("STOPPING=1")

    def watchdog_interval_s(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC``, as systemd recommends.

        :returns: None when the watchdog is off: ``WATCHDOG_USEC`` unset or not a positive integer,
            or ``WATCHDOG_PID`` set to another process (a child inheriting our environment must not
            ping for us).
        """
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Close the socket (a later notification reopens it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    # A newline would end the STATUS assignment and start a bogus one.
    return text.replace("\r", " ").replace("\n", " ")


async def watchdog_loop(notifier: SystemdNotifier, clock: Clock) -> None:
    """Ping ``WATCHDOG=1`` every :meth:`SystemdNotifier.watchdog_interval_s` until cancelled.

    The pings come from a task on the event loop itself, not from a thread: a loop that is stuck
    (a blocking call, a livelock) stops pinging, and systemd restarts the service. Returns at once
    when the watchdog is off.
    """
    interval_s = notifier.watchdog_interval_s()
    if interval_s is None:
        return
    while True:
        notifier.watchdog()
        await clock.sleep(interval_s)


def journal_stream(
    identifier: str, priority: int, *, path: str = JOURNAL_STDOUT
) -> socket.socket | None:
    """A new journald stream whose every line is a record at ``priority`` (``sd_journal_stream_fd``).

    For output that cannot be formatted as one record with its ``<N>`` prefix: a process's dying
    stack dump (faulthandler writes raw lines from a signal handler) or a child process we do not
    control. Lines that do start with ``<N>`` keep that priority (``level_prefix`` is on), so our
    own records written to it lose nothing. journald files the records under our unit by the
    connecting process's cgroup.

    :returns: the connected socket (write-only), or None where there is no journald.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        sock.shutdown(socket.SHUT_RD)
        # identifier, unit (empty: journald derives it), priority, level_prefix, forward to
        # syslog, kmsg, console: the header journald-stream.c expects, one value per line.
        sock.sendall(f"{identifier}\n\n{priority}\n1\n0\n0\n0\n".encode())
    except OSError:
        sock.close()
        return None
    return sock
