"""warmupd: keeps expensive derived results warm so that no user request waits for them."""

from __future__ import annotations

__version__ = "0.1.0"
