"""The machine's servers a local deployment uses: PostgreSQL for the metadata database (LocalExecutor and the
CeleryExecutor both need a database other than SQLite) and Redis as the Celery broker (a DB number claimed
empty for the deployment, so deployments sharing the server never see each other's messages).

Where they are: ``SHARDMIGRATE_PG_HOST`` / ``_PORT`` / ``_USER`` (default 127.0.0.1:5432, user postgres, trust
authentication) and ``SHARDMIGRATE_REDIS_HOST`` / ``_PORT`` (127.0.0.1:6379); the tests' ``SHARDMIGRATE_TEST_*``
names are honoured too.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"SHARDMIGRATE_{name}") or os.environ.get(f"SHARDMIGRATE_TEST_{name}") or default


PG_HOST = _setting("PG_HOST", "127.0.0.1")
PG_PORT = int(_setting("PG_PORT", "5432"))
PG_USER = _setting("PG_USER", "postgres")
REDIS_HOST = _setting("REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(_setting("REDIS_PORT", "6379"))
_REDIS_OWNER_KEY = "shardmigrate:e2e:owner"


class ServiceError(RuntimeError):
    """A server the deployment needs is missing or full; the message names it and how to start it."""


def pg_admin() -> Any:
    """An autocommit connection to the server's ``postgres`` database (to create and drop databases)."""
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=5
    )


def sqlalchemy_url(database: str, driver: str = "postgresql+psycopg2") -> str:
    """The metadata database's URL (trust authentication: no password in it)."""
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def database_exists(name: str) -> bool:
    with pg_admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def create_database(name: str) -> None:
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def check_servers(*, redis_needed: bool = True) -> None:
    """Raise ServiceError naming the server that is missing (PostgreSQL or, when used, the local Redis)."""
    try:
        pg_admin().close()
    except ImportError as exc:
        raise ServiceError(
            f"{exc}: the local deployment talks to PostgreSQL through psycopg 3 "
            "(pip install 'airflow-provider-shardmigrate[postgres]'; `make install` has it)"
        ) from None
    except Exception as exc:
        raise ServiceError(
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} (user {PG_USER}): {type(exc).__name__}: {exc}. "
            "The deployment keeps its metadata DB there: start it with `make services`."
        ) from None
    if not redis_needed:
        return
    try:
        import celery  # noqa: F401
        import redis
    except ImportError as exc:
        raise ServiceError(
            f"{exc}: the CeleryExecutor needs celery[redis] and the Celery provider "
            "(pip install 'airflow-provider-shardmigrate[e2e]'; `make install` has them)"
        ) from None

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except Exception as exc:
        raise ServiceError(
            f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {type(exc).__name__}: {exc}. The deployment "
            "uses it as the Celery broker: start it with `make services` "
            "(or `redis-server --daemonize yes --bind 127.0.0.1`)."
        ) from None


def redis_url(number: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"


def claim_redis_db(owner: str) -> int:
    """An empty Redis DB number (1..15) claimed for this run with an owner key (SET NX)."""
    import redis

    for number in range(15, 0, -1):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_connect_timeout=3)
        if client.set(_REDIS_OWNER_KEY, owner, nx=True, ex=12 * 3600):
            if client.dbsize() == 1:
                return number
            client.delete(_REDIS_OWNER_KEY)  # the DB holds someone else's keys: leave it alone
    raise ServiceError(f"no empty Redis DB (1..15) at {REDIS_HOST}:{REDIS_PORT} to use as this run's broker")


def release_redis_db(number: int, owner: str) -> None:
    """Empty the DB if this owner still holds it."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_connect_timeout=3)
    if client.get(_REDIS_OWNER_KEY) == owner.encode():
        client.flushdb()


def release_redis_db_quietly(number: int | None, owner: str) -> None:
    if number is not None:
        with contextlib.suppress(Exception):
            release_redis_db(number, owner)
