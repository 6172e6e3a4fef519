"""The dashboard (SPEC §15): server-rendered pages under ``/ui`` for the people who run warmupd.

:mod:`warmupd.ui.routes` holds the handlers and reads through the same services as the HTTP API;
:mod:`warmupd.ui.templating` is the only Jinja2 user; :mod:`warmupd.ui.charts` and
:mod:`warmupd.ui.words` are pure (geometry of the SVG charts, schedules and times in words).
"""
