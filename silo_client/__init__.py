"""A Python client for the SILO pruning service (httpx; no server imports)."""
