"""Commands that talk to a running daemon over HTTP: ``trigger``, ``warmup``, ``status``, ``runs``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from warmupd.cli_common import RUN_EXIT, _load, _print_json, _run_async
from warmupd.errors import UsageError, WarmupdError


def _client(args: argparse.Namespace) -> tuple[Any, Callable[..., Any]]:
    from warmupd.client import DaemonClient, default_url

    cfg = _load(args)
    url = args.url or default_url(cfg)
    return url, lambda: DaemonClient(
        url, job_secret=cfg.secrets.job, warmup_secret=cfg.secrets.warmup
    )


def cmd_trigger(args: argparse.Namespace) -> int:
    """Trigger a job on the running daemon; with ``--wait`` print the finished run."""
    from warmupd.client import runs_table

    _, make = _client(args)

    async def go() -> int:
        async with make() as client:
            data = await client.trigger(
                args.job, wait=args.wait, limit=args.limit, concurrency=args.concurrency
            )
        if args.json:
            _print_json(data)
        elif args.wait:
            print(runs_table([data]))
        else:
            print(f"started run {data['runId']} of {data['job']} ({data['statusUrl']})")
        # Like ``run``: 0 success, 3 skipped, 1 anything else that finished badly.
        return RUN_EXIT.get(str(data.get("status")), 1) if args.wait else 0

    return _run_async(go())


def cmd_warmup(args: argparse.Namespace) -> int:
    """Request an on-demand warmup of one comparison."""
    from warmupd.schemas import validate_slug

    try:
        validate_slug(args.slug)
    except WarmupdError as exc:
        raise UsageError(str(exc)) from None
    _, make = _client(args)

    async def go() -> int:
        async with make() as client:
            data = await client.warmup(args.slug)
        if args.json:
            _print_json(data)
        else:
            where = f" ({data['statusUrl']})" if "statusUrl" in data else ""
            print(f"{data.get('slug', args.slug)}: {data.get('status')}{where}")
        return 0

    return _run_async(go())


def cmd_status(args: argparse.Namespace) -> int:
    """Show the running daemon's status."""
    from warmupd.client import status_text

    _, make = _client(args)

    async def go() -> int:
        async with make() as client:
            data = await client.status()
        if args.json:
            _print_json(data)
        else:
            print(status_text(data))
        return 0

    return _run_async(go())


def cmd_runs(args: argparse.Namespace) -> int:
    """List recent runs of the running daemon."""
    from warmupd.client import runs_table

    _, make = _client(args)

    async def go() -> int:
        async with make() as client:
            runs = await client.runs(job=args.job, status=args.status, limit=args.limit)
        if args.json:
            _print_json(runs)
        else:
            print(runs_table(runs) if runs else "no runs")
        return 0

    return _run_async(go())


# --------------------------------------------------------------------------- parser
