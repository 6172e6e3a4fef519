"""The Jinja2 seam: templates are package data, autoescaping is always on (SPEC §15)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2

from warmupd.ui import words


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one template environment (built once; templates are compiled on first use and kept)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("warmupd.ui", "templates"),
        # Every template is HTML or SVG inside HTML: escape everything, whatever the file name.
        autoescape=True,
        # Data (model replies included) may lack a field: it renders empty rather than failing the page.
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        iso=words.iso_of,
        span=words.span,
        size=words.size,
    )
    env.globals.update(relative=words.relative, cron_in_words=words.cron_in_words)
    return env


def render(template: str, **context: Any) -> str:
    """Render ``template`` with ``context`` (values are escaped by the template engine)."""
    return environment().get_template(template).render(**context)
