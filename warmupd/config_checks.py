"""Advice on a valid configuration: settings that work but probably do not do what was meant.

:func:`warnings_for` is pure; ``warmupd check-config`` prints what it returns. A warning never stops
the daemon (the configuration is valid), it only names the keys and what they will do together.
"""

from __future__ import annotations

from warmupd.config import JOB_INSIGHTS, Config


def warnings_for(cfg: Config) -> list[str]:
    """Human-readable warnings, one per problem, each naming the keys involved."""
    out: list[str] = []
    cap = cfg.ai.max_in_flight
    if cap is not None:
        # The model is called by the insights job's items and by on-demand warmups (SPEC §17).
        users = {f"jobs.{JOB_INSIGHTS}.concurrency": cfg.jobs[JOB_INSIGHTS].concurrency}
        users["on_demand.concurrency"] = cfg.on_demand.concurrency
        for key, concurrency in users.items():
            if cap < concurrency:
                out.append(
                    f"ai.max_in_flight = {cap} is below {key} = {concurrency}: at most {cap} "
                    f"model calls run at once, so items wait for a model slot"
                )
    return out
