"""Test-only helpers: real processes (redis-server) and condition waits."""
