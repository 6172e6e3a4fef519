"""``python -m warmupd``."""

from __future__ import annotations

import sys

from warmupd.cli import main

sys.exit(main())
