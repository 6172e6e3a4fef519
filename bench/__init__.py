"""Benchmarks behind docs/BENCHMARKS.md; each module runs with ``python -m bench.NAME``."""
