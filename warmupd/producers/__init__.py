"""Producers: the compute behind each cache entry (forecasts, insights); no I/O to the store."""
