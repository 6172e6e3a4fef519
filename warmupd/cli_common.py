"""What the command line's local and remote commands share: config lookup, asyncio, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from warmupd.config import Config, load_config

DEFAULT_CONFIG = "/etc/warmupd/warmupd.toml"
T = TypeVar("T")


def config_path(arg: str | None) -> str | None:
    """``-c`` wins, then ``$WARMUPD_CONFIG``, then /etc/warmupd/warmupd.toml if it exists.

    With none of them the embedded defaults apply (``None``).
    """
    if arg:
        return arg
    env = os.environ.get("WARMUPD_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None


def _load(args: argparse.Namespace) -> Config:
    env: dict[str, str] | None = None
    credentials = getattr(args, "credentials_directory", None)
    if credentials:
        # check-config sees the secrets the service sees: systemd's copies (or their sources).
        env = {**os.environ, "CREDENTIALS_DIRECTORY": credentials}
    return load_config(config_path(args.config), env=env)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


RUN_EXIT = {"success": 0, "skipped": 3}
"""Exit codes of a run record's status (anything else: 1)."""


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))
