"""How a lock's holder is stored beside its lease and named in a ``locked_elsewhere`` answer."""

from __future__ import annotations

from warmupd.models import Held


def holder_text(node: str, run_id: int | None = None) -> str:
    """How a holder is stored beside its lease: the node id, then `` run <id>`` once known.

    Node ids (``host:pid:hex``) hold no spaces, so :func:`parse_holder` can split it again.
    """
    return node if run_id is None else f"{node} run {run_id}"


def parse_holder(text: str | bytes | None) -> Held:
    """The :class:`~warmupd.models.Held` answer for a stored holder text (empty: unknown)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text:
        return Held(None)
    node, sep, run = text.partition(" run ")
    if sep and run.isdigit():
        return Held(node, int(run))
    return Held(text)


def describe_holder(held: Held) -> str:
    """``node <id>, run <id>`` for messages, as far as the backend knew."""
    if held.holder is None:
        return "holder unknown"
    run = f", run {held.run_id}" if held.run_id is not None else ""
    return f"node {held.holder}{run}"
