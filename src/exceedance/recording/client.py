"""How our processes share an MLflow store: one opens its client while another may be creating
or migrating the same new store, and SQLite's single write lock is waited for, never lost to.

Our processes take turns on a SQLite store through `store_lock` (`sqlite_store`), and never let
MLflow create a SQLite store in place: a missing one is created whole first.
"""

from __future__ import annotations

import time

from exceedance.sqlite_store import store_lock

__all__ = ["MIGRATION_RACE", "open_client", "store_lock"]


class _Retrying:
    """Proxy to an `MlflowClient` that retries a call while SQLite says "database is locked".

    Several jobs writing to one SQLite file take turns on its single write lock; a writer that
    waits longer than SQLite's busy timeout gets an error instead of its turn. Retrying with
    backoff turns that into a short wait, so no run or metric is ever dropped.
    """

    def __init__(self, client, attempts: int = 8, first_wait_s: float = 0.2):
        self._client, self._attempts, self._first_wait_s = client, attempts, first_wait_s

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            for attempt in range(self._attempts):
                try:
                    return method(*args, **kwargs)
                except Exception as err:
                    if "database is locked" not in str(err) or attempt == self._attempts - 1:
                        raise
                    time.sleep(self._first_wait_s * 2**attempt)
            raise AssertionError("unreachable")

        return call


# Errors MLflow raises when another process creates or migrates the same new store at the same
# moment (it creates and upgrades a store's schema on first open, with no lock of its own).
MIGRATION_RACE = ("_alembic_tmp", "already exists", "no such table", "database is locked", "duplicate")


def open_client(uri: str, attempts: int = 6) -> _Retrying:
    """An `MlflowClient` on `uri` (retrying while SQLite is locked), which MLflow opens (migrating
    the schema) at once; a missing SQLite store is created whole first (`sqlite_store`).

    Our own processes take turns through `store_lock`; another MLflow process (`mlflow ui`, a
    notebook, a test's client) does not. When it migrates the store at the same moment, wait
    until its migration is done (`stores.check_store` waits while the schema keeps changing) and
    open again; a store that is really unusable then fails the check with one line.
    """
    from mlflow import MlflowClient

    from exceedance.sqlite_store import create_sqlite_store
    from exceedance.store_folders import sqlite_path
    from exceedance.stores import check_store, schema_revisions

    if uri.startswith("sqlite:///") and not sqlite_path(uri).exists():  # e.g. deleted since the check
        create_sqlite_store(sqlite_path(uri), schema_revisions()[0])
    for attempt in range(attempts):
        try:
            return _Retrying(MlflowClient(tracking_uri=uri))
        except Exception as err:
            if attempt == attempts - 1 or not any(sign in str(err) for sign in MIGRATION_RACE):
                raise
            time.sleep(0.5 * (attempt + 1))
            check_store(uri, timeout_s=30.0)
    raise AssertionError("unreachable")
