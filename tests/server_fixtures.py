"""Fixtures for real PostgreSQL and MariaDB shard databases (filled in by the engines work)."""
