"""User-defined job kinds (SPEC §16): ``http`` warms URLs and sitemaps, ``command`` runs a program.

They are jobs like the built-in ones — same runner, lock, run log, metrics, API and CLI — built
here from the ``[jobs.<name>]`` tables that carry a ``kind``.
"""

from __future__ import annotations

from typing import Any

from warmupd.clock import Clock
from warmupd.config import Config
from warmupd.config_kinds import CommandKind, HttpKind
from warmupd.jobs.base import Job
from warmupd.jobs.kinds.command import CommandJob
from warmupd.jobs.kinds.http import HttpJob


def build_kind_jobs(config: Config, clock: Clock) -> list[Job[Any]]:
    """A job for every configured job of a kind, in config order."""
    jobs: list[Job[Any]] = []
    for name, job in config.jobs.items():
        if isinstance(job.spec, HttpKind):
            jobs.append(HttpJob(name, clock=clock))
        elif isinstance(job.spec, CommandKind):
            jobs.append(
                CommandJob(
                    name, clock=clock, shutdown_grace_s=config.daemon.shutdown_grace_ms / 1000
                )
            )
    return jobs
