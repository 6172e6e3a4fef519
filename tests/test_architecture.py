"""STYLE.md's layering, seams and size budget, enforced on the source tree (imports are parsed, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "warmupd"

# A module may import modules of its own layer or lower, never higher.
LAYERS: dict[str, int] = {
    # L0: leaves, stdlib only
    "errors": 0,
    "clock": 0,
    "models": 0,
    # L1: config, storage engine, pure validation, observability, compute
    "scheduler": 1,  # cron rules only; config validates schedules with it
    "config_values": 1,
    "config": 1,
    "config_kinds": 1,
    "config_checks": 1,
    "config_database": 1,
    "state": 1,  # the Database protocol and its backends (aiosqlite, asyncpg)
    "state.sqlite": 1,
    "state.postgres": 1,
    "state.backends": 1,
    "state.copy": 1,  # copy-state: picks backends by URL like state.backends
    "state.copy_tables": 1,
    "schemas": 1,
    "metrics": 1,
    "health": 1,
    "reload": 1,
    "promtext": 1,
    "systemd": 1,
    "logs": 1,
    "pool": 1,
    "demo": 1,
    "producers": 1,
    # L2: repositories, the lock contract, the scheduling loop
    "state.store": 2,
    "state.cache": 2,
    "cli_common": 7,
    "cli_check": 7,
    "cli_remote": 7,
    "state.runs": 2,
    "importer": 2,
    "json_input": 1,
    "locks": 2,
    "state.pauses": 2,
    "scheduler_loop": 2,
    "heartbeat": 2,
    # L3: lock backends
    "locks.sqlite": 3,
    "locks.redis": 3,
    "locks.fallback": 3,
    "locks.postgres": 3,
    # L4: jobs and the daemon's self-view
    "jobs": 4,
    "jobs.slots": 4,
    "status": 4,
    # L5: the HTTP edge
    "services": 5,
    "auth": 5,
    "render": 5,
    "openapi": 5,
    "openapi_schemas": 5,
    "http": 5,
    "ui": 5,  # the dashboard: routes, templates, pure chart geometry and wording
    # L6: composition root
    "daemon": 6,
    "wiring": 6,
    "startup": 6,  # waiting for the state database (serves /healthz meanwhile)
    # L7: command line
    "client": 7,
    "cli": 7,
    "__main__": 7,
    "__init__": 0,
}

# Every third-party dependency lives behind one seam module.
SEAMS: dict[str, set[str]] = {
    "croniter": {"scheduler"},
    "redis": {"locks.redis"},
    "statsmodels": {"producers.forecast"},
    "pandas": {"producers.forecast"},
    "aiosqlite": {"state.sqlite"},
    "asyncpg": {"state.postgres"},
    "aiohttp.web": {"http", "daemon", "wiring", "startup", "ui.routes"},
    "jinja2": {"ui.templating"},
}

MAX_LINES = 450


def modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(PACKAGE).with_suffix("").parts): p
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    if parts[-1] == "__init__" and len(parts) > 1:
        return layer_of(".".join(parts[:-1]))
    raise AssertionError(f"warmupd.{module} has no layer in tests/test_architecture.py")


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_flow_downwards(module: str) -> None:
    mine = layer_of(module)
    for name in imports(modules()[module]):
        if not name.startswith("warmupd."):
            continue
        target = name.removeprefix("warmupd.")
        if target not in modules() and target.rsplit(".", 1)[0] in modules():
            target = target.rsplit(".", 1)[0]  # `from warmupd.x import name`
        if target not in modules() and f"{target}.__init__" in modules():
            target = f"{target}.__init__"
        if target not in modules():
            continue
        assert layer_of(target) <= mine, (
            f"warmupd.{module} (L{mine}) imports warmupd.{target} (L{layer_of(target)})"
        )


@pytest.mark.parametrize("dependency", sorted(SEAMS))
def test_each_dependency_has_one_seam(dependency: str) -> None:
    users = {
        module
        for module, path in modules().items()
        if any(name == dependency or name.startswith(dependency + ".") for name in imports(path))
    }
    assert users <= SEAMS[dependency], (
        f"{dependency} imported outside its seam: {sorted(users - SEAMS[dependency])}"
    )


def test_http_edge_never_touches_storage_or_lock_backends() -> None:
    for module in (
        "http",
        "auth",
        "render",
        "services",
        "openapi",
        "openapi_schemas",
        "ui.routes",
        "ui.charts",
        "ui.templating",
    ):
        for name in imports(modules()[module]):
            assert not name.startswith(("warmupd.state", "warmupd.locks")), (module, name)


def test_leaves_import_nothing_from_the_package() -> None:
    for module in ("errors", "clock", "models"):
        assert not [n for n in imports(modules()[module]) if n.startswith("warmupd")], module


@pytest.mark.parametrize("module", sorted(modules()))
def test_module_size_budget(module: str) -> None:
    lines = len(modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"warmupd/{module}.py has {lines} lines (budget {MAX_LINES}): split it"
    )


def test_the_layer_map_knows_every_module() -> None:
    for module in modules():
        layer_of(module)
