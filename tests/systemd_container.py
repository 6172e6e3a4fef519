"""A Debian 12 container booted with systemd-nspawn, for the "run as deployed" test (issue 17).

The base image is built once with ``debootstrap`` from Debian's packages and cached under
``$WARMUPD_TEST_CACHE`` (default ``/var/cache/warmupd-test``), keyed by a hash of the suite and the
package list; it is built into a temporary directory beside its final place and renamed, so a build
that dies half-way is never used. Each boot runs on a throw-away overlay (``--volatile=overlay``):
the cached image is never written to.

Wheels for warmupd's dependencies are built on the host (the container has no network) and cached
by a hash of ``pyproject.toml``; warmupd's own wheel is built fresh for every run.

How this boots on a host whose PID 1 is not systemd (a Firecracker VM with a cgroup v1 hybrid
layout and no systemd-machined):

- ``--register=no``: there is no machined to register with;
- ``--keep-unit``: nspawn otherwise asks the host's systemd over D-Bus for a scope unit
  ("Failed to open system bus"); with it, the container stays in the cgroup we were started in;
- ``--private-network``: the container sees only its own loopback;
- commands run inside with ``nsenter --all`` on the container's init (no ``machinectl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("WARMUPD_TEST_CACHE", "/var/cache/warmupd-test"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "sqlite3",
    "curl",
    "procps",
)
"""What docs/OPERATIONS.md installs (python3, python3-venv, sqlite3), systemd itself, and curl and
procps for the checks."""

PATH_IN_CONTAINER = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing_tools() -> list[str]:
    """Host programs this needs and does not find."""
    tools = ("debootstrap", "systemd-nspawn", "nsenter")
    return [t for t in tools if shutil.which(t) is None]


def why_not_bootable() -> str | None:
    """Why a container cannot be booted here, or None."""
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    missing = missing_tools()
    if missing:
        return f"missing {', '.join(missing)} (Debian: debootstrap systemd-container util-linux)"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (parallel test runs build each cache entry once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def base_image(log: Path) -> Path:
    """The cached Debian root directory, built with debootstrap on first use."""
    key = _key(SUITE, MIRROR, "minbase", *PACKAGES)
    final = CACHE_ROOT / f"{SUITE}-{key}"
    if (final / "root" / "usr" / "bin" / "systemctl").exists():
        return final / "root"
    with _locked(CACHE_ROOT / f"{SUITE}-{key}.lock"):
        if (final / "root" / "usr" / "bin" / "systemctl").exists():
            return final / "root"
        building = Path(tempfile.mkdtemp(prefix=f".{SUITE}-{key}-", dir=CACHE_ROOT))
        (CACHE_ROOT / "debs").mkdir(exist_ok=True)  # downloaded packages, kept for rebuilds
        try:
            with log.open("ab") as out:
                subprocess.run(
                    [
                        "debootstrap",
                        "--variant=minbase",
                        f"--cache-dir={CACHE_ROOT / 'debs'}",
                        f"--include={','.join(PACKAGES)}",
                        SUITE,
                        str(building / "root"),
                        MIRROR,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=True,
                    timeout=1800,
                )
            # A fixed machine id would be shared by every boot; an empty file makes systemd
            # generate one per boot (on the volatile overlay) without running first-boot units.
            (building / "root" / "etc" / "machine-id").write_text("")
            (building / "root" / "etc" / "hostname").write_text("warmupd-test\n")
            building.rename(final)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
    return final / "root"


def _pip(python: str, *args: str, log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(
            [python, "-m", "pip", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=1800,
        )


_MANYLINUX = ("manylinux_2_36", "manylinux_2_28", "manylinux_2_27", "manylinux_2_24",
              "manylinux_2_17", "manylinux2014", "manylinux_2_5", "manylinux1")  # fmt: skip
"""Wheel platforms Debian 12 (glibc 2.36) runs; pip does not widen ``--platform`` by itself."""


def image_python_version(image: Path) -> str:
    """The version of the image's ``python3`` (Debian 12: 3.11.2)."""
    out = subprocess.run(
        [
            "chroot",
            str(image),
            "python3",
            "-c",
            "import platform; print(platform.python_version())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _download(dest: Path, requirements: Sequence[str], python_version: str, log: Path) -> None:
    platforms = [arg for tag in _MANYLINUX for arg in ("--platform", f"{tag}_x86_64")]
    _pip(
        sys.executable,
        "download",
        "-q",
        "--only-binary=:all:",
        f"--python-version={python_version}",
        "--implementation=cp",
        "--abi=cp311",
        *platforms,
        "-d",
        str(dest),
        *requirements,
        log=log,
    )


def _unmet(house: Path, python_version: str) -> list[str]:
    """Requirements of the wheels in ``house`` that no wheel there satisfies, for the image's Python.

    ``pip download --python-version`` picks wheels for that version but evaluates markers for the
    running interpreter: redis needs ``async-timeout`` only on Python < 3.11.3, i.e. on Debian's
    3.11.2 and not on the host's 3.11.7. So the markers are evaluated here, for the image.
    """
    from email.parser import BytesParser
    from zipfile import ZipFile

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    env = {
        **default_environment(),
        "python_full_version": python_version,
        "python_version": ".".join(python_version.split(".")[:2]),
        "implementation_version": python_version,
    }
    have = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in house.glob("*.whl")}
    missing: list[str] = []
    for wheel in have.values():
        with ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            headers = BytesParser().parsebytes(zf.read(meta), headersonly=True)
        for spec in headers.get_all("Requires-Dist") or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            if canonicalize_name(req.name) not in have:
                missing.append(str(req).split(";")[0])
    return sorted(set(missing))


def wheelhouse(log: Path, work: Path, python_version: str) -> Path:
    """A directory of wheels for the image's Python: warmupd (built now), its dependencies and pip.

    The dependency wheels are cached by ``pyproject.toml`` and the image's Python version; CPython
    3.11 has the same ``cp311`` ABI on the host and in Debian 12, and manylinux wheels run on
    Debian's glibc.
    """
    import tomllib

    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    key = _key((PROJECT / "pyproject.toml").read_bytes(), python_version)
    deps = CACHE_ROOT / f"wheels-{key}"
    if not deps.is_dir():
        with _locked(CACHE_ROOT / f"wheels-{key}.lock"):
            if not deps.is_dir():
                building = Path(tempfile.mkdtemp(prefix=f".wheels-{key}-", dir=CACHE_ROOT))
                try:
                    _download(building, [*project["dependencies"], "pip"], python_version, log)
                    for _ in range(5):  # closes over marker-dependent requirements
                        unmet = _unmet(building, python_version)
                        if not unmet:
                            break
                        _download(building, unmet, python_version, log)
                    building.rename(deps)
                finally:
                    if building.exists():
                        shutil.rmtree(building, ignore_errors=True)
    house = work / "wheelhouse"
    shutil.copytree(deps, house)
    # Built from a copy: setuptools writes build/ and *.egg-info into the source tree otherwise.
    source = work / "source"
    shutil.copytree(
        PROJECT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "var", "*.egg-info", "build", ".*_cache", "__pycache__", ".coverage*"
        ),
    )
    _pip(sys.executable, "wheel", "-q", "--no-deps", "-w", str(house), str(source), log=log)
    return house


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _container_init(nspawn_pid: int) -> int | None:
    """The pid (on the host) of the container's PID 1: the descendant whose innermost pid is 1."""
    for pid in _descendants(nspawn_pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                if len(ids) > 1 and ids[-1] == "1":
                    return pid
    return None


class Container:
    """A booted container: :meth:`run` executes commands inside it as root."""

    def __init__(self, image: Path, work: Path, binds: Sequence[tuple[Path, str]] = ()) -> None:
        self.image = image
        self.work = work
        self.binds = list(binds)
        self.console = work / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid: int | None = None

    def boot(self, timeout_s: float = 120.0) -> None:
        """Boot and wait until systemd finished starting up (``is-system-running --wait``)."""
        args = [
            "systemd-nspawn",
            f"--directory={self.image}",
            "--volatile=overlay",
            "--boot",
            "--private-network",
            "--register=no",
            "--keep-unit",
            "--console=passive",
            f"--machine=warmupd-test-{os.getpid()}",
        ]
        args += [f"--bind-ro={host}:{inside}" for host, inside in self.binds]
        with self.console.open("ab") as out:
            # A new session: a signal meant for pytest's process group never reaches nspawn.
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while self.init_pid is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited:\n{self.console_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no container init after {timeout_s}s")
            init = _container_init(self.proc.pid)
            # PID 1 is nspawn's own helper until it executes systemd.
            if init is not None and Path(f"/proc/{init}/comm").read_text().strip() == "systemd":
                self.init_pid = init
            time.sleep(0.1)
        state = ""
        while state not in ("running", "degraded"):
            if time.monotonic() > deadline:
                raise AssertionError(f"container did not boot ({state}):\n{self.console_text()}")
            left = str(max(1, int(deadline - time.monotonic())))
            out = self.run("timeout", left, "systemctl", "is-system-running", "--wait", check=False)
            state = out.stdout.strip()
            if state not in ("running", "degraded"):
                time.sleep(0.2)  # systemd is not answering yet (nothing printed)

    def console_text(self) -> str:
        """What the container printed on its console."""
        return self.console.read_text(errors="replace")[-20_000:]

    def run(
        self,
        *cmd: str,
        check: bool = True,
        input_text: str | None = None,
        timeout_s: float = 180.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the container as root, with a clean environment."""
        assert self.init_pid is not None
        result = subprocess.run(
            [
                "nsenter",
                f"--target={self.init_pid}",
                "--all",
                "--",
                "/usr/bin/env",
                "-i",
                f"PATH={PATH_IN_CONTAINER}",
                "LANG=C.UTF-8",
                "SYSTEMD_PAGER=",
                "SYSTEMD_COLORS=0",
                *cmd,
            ],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def sh(self, script: str, *, check: bool = True, timeout_s: float = 180.0) -> str:
        """Run a shell script inside (``set -eu``); returns its stdout."""
        return self.run("/bin/sh", "-euc", script, check=check, timeout_s=timeout_s).stdout

    def poweroff(self, timeout_s: float = 60.0) -> None:
        """Shut the container down cleanly (SIGTERM → nspawn asks init to power off)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # Our own nspawn process; with it the whole container goes.
            self.proc.kill()
            self.proc.wait(timeout=30)
