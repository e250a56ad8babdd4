"""Which MLflow store a command writes to, and whether it may: checked before anything trains.

A command only ever writes to a store that is MLflow's and at the schema this MLflow expects, or
to a new one it creates under `mlruns/`. Everything else is refused with one line before
TensorFlow is imported and before a byte is written: a file that is not a SQLite database, a
database with other tables, a store of an older or newer MLflow schema (MLflow would upgrade an
older one in place, locking out older clients), a store whose creation was cut short, a missing
database driver, a server that is not MLflow, an artifacts folder that cannot be written. A
brand-new store that another process (a second job, `mlflow ui`, a notebook) is creating right
now is waited for, not misjudged: its tables and revision keep changing until the migration ends.

A new SQLite store is created whole or not at all (`create_sqlite_store`): MLflow migrates a new
store in place, step by step, and a write failing midway (a full disk, a quota, a file-size limit)
left a half-built schema that every later command refused, rerun or not.

SQLAlchemy and alembic's files only: no mlflow import (about a second) in the commands' start.
A tracking server is asked over HTTP (`server`).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import time
from functools import cache
from pathlib import Path

from exceedance.config import TrackingConfig
from exceedance.errors import ConfigError, redact
from exceedance.server import ensure_server, probe_server
from exceedance.sqlite_store import create_sqlite_store
from exceedance.store_folders import (
    artifact_root,
    check_artifacts,
    local_folder,
    require_free_space,
    server_artifacts,
    sqlite_path,
)

REMOTE_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# A store whose tables or schema revision changed within this many seconds is being migrated
# by another process: wait for it (at most MIGRATION_WAIT_S) instead of judging it half-built.
SETTLE_S = 2.0
MIGRATION_WAIT_S = 60.0
SQLITE_HEADER = b"SQLite format 3\x00"
DRIVERS = {
    "postgresql": "psycopg[binary] (pip install 'exceedance[postgres]')",
    "mysql": "mysqlclient (or PyMySQL with mysql+pymysql://)",
}


def resolve_uri(config: TrackingConfig) -> str:
    """The tracking URI to use, with any local path made absolute.

    Order: `tracking.uri`, then `MLFLOW_TRACKING_URI`, then SQLite at `<store_dir>/mlflow.db`.
    Paths are resolved against the current directory at start, so a job that later changes
    directory still writes to the same store.
    """
    uri = config.uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return f"sqlite:///{Path(config.store_dir).resolve() / 'mlflow.db'}"
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme not in REMOTE_SCHEMES + DATABASE_SCHEMES:
        raise ConfigError(
            f"tracking.uri: unsupported tracking URI {redact(uri)!r}; use sqlite:///path/to/mlflow.db, "
            "http(s)://host:port of an MLflow server, or a postgresql:// / mysql:// database"
        )
    if scheme == "sqlite":
        path = uri.split(":///", 1)[1] if uri.startswith("sqlite:///") else ""
        if not path or path.startswith(":memory:") or "?" in path:
            raise ConfigError(
                f"tracking.uri: {uri!r} names no database file; use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (an in-memory store would lose every run)"
            )
        return f"sqlite:///{Path(path).resolve()}"
    return uri


def check_store(uri: str, timeout_s: float, create: bool = True, experiment: str | None = None) -> None:
    """Raise `ConfigError` unless `uri` is an MLflow store this MLflow can write to; with `create`,
    a missing SQLite store is created, whole (`sqlite_store`); with `experiment`, the folder its
    runs' artifacts go to must be writable too.

    Args:
        uri: a URI from `resolve_uri`.
        timeout_s: how long a server or database may take to answer.
        create: whether a missing SQLite file will be created (a sweep), or must exist (a pick).
        experiment: the experiment the command will create runs in (None: no artifacts written).

    Raises:
        ConfigError: naming the store or folder, and what to do.
        sqlite_store.StoreNotCreated: a new store could not be written; nothing is left of it.
    """
    if uri.startswith(("http://", "https://")):
        probe_server(uri, timeout_s)
        if experiment is not None:
            location = server_artifacts(uri, experiment, timeout_s)
            check_artifacts(local_folder(location) if location else None, experiment, own=True)
    else:
        _check_database(uri, timeout_s, create, experiment)


@cache
def schema_revisions() -> tuple[str, frozenset[str]]:
    """The head of MLflow's schema migrations and every revision it knows, read from the
    migration files' `revision` / `down_revision` assignments (without importing them: they
    import mlflow)."""
    spec = importlib.util.find_spec("mlflow")
    versions = Path(spec.submodule_search_locations[0]) / "store" / "db_migrations" / "versions"
    revisions, parents = set(), set()
    for file in versions.glob("*.py"):
        for node in ast.parse(file.read_text()).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
                continue
            name, value = node.targets[0].id, node.value
            if name == "revision":
                revisions.add(ast.literal_eval(value))
            elif name == "down_revision" and (found := ast.literal_eval(value)):
                parents.update([found] if isinstance(found, str) else found)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"MLflow's schema migrations have {len(heads)} heads; expected one")
    return heads.pop(), frozenset(revisions)


def _check_sqlite_file(uri: str, create: bool) -> bool:
    """File-level checks of a SQLite store; returns whether it is still to be created."""
    path = sqlite_path(uri)
    shown = redact(uri)
    if path.is_dir():
        raise ConfigError(f"tracking.uri: {path} is a directory, not a SQLite file; point {shown} at a file")
    if not path.exists():
        if not create:
            raise ConfigError(f"tracking.uri: no MLflow store at {shown}; run a sweep first or fix the URI")
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"tracking.uri: cannot create the store folder {folder} ({err.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"tracking.uri: the store folder {folder} is not writable")
        require_free_space(folder)
        return True
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK):
        raise ConfigError(
            f"tracking.uri: the MLflow store {path} (or its folder) is read-only; make it writable or use another store"
        )
    require_free_space(path.parent)
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise ConfigError(f"tracking.uri: {path} is not a SQLite database; point tracking.uri at an MLflow store")
    return path.stat().st_size == 0


def _engine(uri: str, timeout_s: float):
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
        dialect = url.get_dialect()
    except Exception as err:  # ArgumentError, NoSuchModuleError
        raise ConfigError(f"tracking.uri: {redact(uri)!r} is not a database URI SQLAlchemy knows ({err})") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        backend = url.get_backend_name()
        raise ConfigError(
            f"tracking.uri: the {backend} driver is not installed ({err}); "
            f"pip install {DRIVERS.get(backend, 'its driver')}"
        ) from None
    connect_args = {"timeout": timeout_s} if url.get_backend_name() == "sqlite" else {"connect_timeout": int(timeout_s)}
    return sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)


def _schema_state(engine) -> tuple[frozenset[str], str | None]:
    import sqlalchemy

    with engine.connect() as connection:
        tables = frozenset(sqlalchemy.inspect(connection).get_table_names())
        revision = None
        if "alembic_version" in tables:
            rows = list(connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")))
            revision = rows[0][0] if rows else None
    return tables, revision


def _check_database(uri: str, timeout_s: float, create: bool, experiment: str | None) -> None:
    head, known = schema_revisions()
    if uri.startswith("sqlite") and _check_sqlite_file(uri, create):
        if experiment is not None:  # before the store is made: a refusal leaves nothing behind
            check_artifacts(artifact_root(uri), experiment)
        create_sqlite_store(sqlite_path(uri), head)
    engine = _engine(uri, timeout_s)
    try:
        tables, revision = _settled_schema(engine, uri)
        _check_schema(engine, uri, tables, revision, create, head, known)
        if experiment is not None:
            location = _artifact_location(engine, experiment) if tables else None
            own = location is not None
            check_artifacts(local_folder(location) if own else artifact_root(uri), experiment, own)
    finally:
        engine.dispose()


def _artifact_location(engine, experiment: str) -> str | None:
    import sqlalchemy

    with engine.connect() as connection:
        query = sqlalchemy.text("SELECT artifact_location FROM experiments WHERE name = :name")
        rows = list(connection.execute(query, {"name": experiment}))
    return rows[0][0] if rows and rows[0][0] else None


def _settled_schema(engine, uri: str) -> tuple[frozenset[str], str | None]:
    """The store's tables and schema revision once they stop changing (another process's migration)."""
    import sqlalchemy

    head, _ = schema_revisions()
    shown = redact(uri)
    deadline, last, settled_at = time.monotonic() + MIGRATION_WAIT_S, None, time.monotonic()
    while True:
        try:
            state = _schema_state(engine)
        except sqlalchemy.exc.DBAPIError as err:
            raise ConfigError(f"tracking.uri: cannot open the store {shown} ({redact(str(err.orig))})") from None
        tables, revision = state
        if state != last:
            last, settled_at = state, time.monotonic()
        migrating = any(t.startswith("_alembic_tmp") for t in tables) or (tables and revision != head)
        if not migrating or time.monotonic() - settled_at >= SETTLE_S:
            break
        if time.monotonic() > deadline:
            raise ConfigError(
                f"tracking.uri: the store {shown} has been mid-migration for {MIGRATION_WAIT_S:.0f} s; is another "
                "MLflow process stuck? Stop it, back the store up and run `mlflow db upgrade`"
            )
        time.sleep(0.25)
    return tables, revision


def _check_schema(engine, uri: str, tables, revision, create: bool, head: str, known) -> None:
    import sqlalchemy

    shown = redact(uri)
    if not tables:
        if not create:
            raise ConfigError(f"tracking.uri: {shown} is an empty database, not an MLflow store; run a sweep first")
        return
    if "alembic_version" not in tables or not {"experiments", "runs"} <= tables:
        shown_tables = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise ConfigError(
            f"tracking.uri: {shown} is not an MLflow store (it holds the tables {shown_tables}); "
            "point tracking.uri at an MLflow store or a new file"
        )
    if revision == head:
        return
    with engine.connect() as connection:
        experiments = connection.execute(sqlalchemy.text("SELECT COUNT(*) FROM experiments")).scalar()
    if revision in known and not experiments:  # MLflow makes its Default experiment once migrated
        raise ConfigError(
            f"tracking.uri: {shown} is an MLflow store whose creation was cut short (its schema stopped at "
            f"{revision}, not {head}, and it holds no experiment, so nothing is lost): delete "
            f"{sqlite_path(uri) if uri.startswith('sqlite') else 'it'}, then rerun"
        )
    if revision in known:
        raise ConfigError(
            f"tracking.uri: {shown} has an older MLflow schema ({revision}; this MLflow needs {head}); "
            f"back it up, then run `mlflow db upgrade {shown}`"
        )
    raise ConfigError(
        f"tracking.uri: {shown} has a schema revision this MLflow does not know ({revision}), "
        "likely from a newer MLflow; use that MLflow or another store"
    )


def connect(config: TrackingConfig, experiment: str | None = None) -> str:
    """Resolve the store's URI and make sure it can be written to, before anything trains: a new
    SQLite store is created whole, and the folder `experiment`'s artifacts go to must be writable.

    Raises:
        ConfigError: for an unknown scheme, an unusable store or artifacts folder, or a server that
            does not answer.
        sqlite_store.StoreNotCreated: a new store could not be written; nothing is left of it.
    """
    if config.server:
        backend = f"sqlite:///{Path(config.store_dir).resolve() / 'mlflow.db'}"
        if not sqlite_path(backend).exists():  # the server to start would migrate a new store in place
            check_store(backend, config.timeout_s, experiment=experiment)
        uri = ensure_server(config)
    else:
        uri = resolve_uri(config)
    check_store(uri, config.timeout_s, experiment=experiment)
    return uri
