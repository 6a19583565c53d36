"""Where a study lives: `tune.storage` URLs, opening them, and the lock the workers take
around "is there budget left? -> new trial"."""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna

from vqvideo.errors import ConfigError, VQVideoError
from vqvideo.stages.tune.recovery import requeue_stale


@dataclass
class Store:
    """An opened storage and what the workers need to share it."""

    url: str  # absolute form of tune.storage; what the workers and optuna-dashboard open
    storage: optuna.storages.BaseStorage
    kind: str  # sqlite | journal | database
    lock_path: Path | None  # a file the workers lock around "budget left? -> new trial"

    @property
    def display(self) -> str:
        return _hide_password(self.url)

    @property
    def dashboard(self) -> str:
        """The optuna-dashboard command for this study's storage."""
        target = self.url.removeprefix("journal:") if self.kind == "journal" else self.display
        return f"optuna-dashboard {target}"


def absolute_storage_url(url: str, root: Path) -> tuple[str, str, Path | None]:
    """(url with relative file paths made absolute against `root`, kind, file path or None)."""
    if url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".journal"))):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path = path if path.is_absolute() else root / path
        return f"journal:{path}", "journal", path
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path = path if path.is_absolute() else root / path
        return f"sqlite:///{path}", "sqlite", path
    if "://" not in url:
        raise ConfigError(
            f"tune.storage {url!r} is not a storage URL; use sqlite:///path.db, journal:path.log "
            "or a database URL such as postgresql://user:pass@host/db"
        )
    return _postgres_driver(url), "database", None


def _postgres_driver(url: str) -> str:
    """`postgresql://` with whichever driver is installed.

    SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3; many installs (our `postgres` extra
    included) have psycopg2 instead. An explicit `postgresql+driver://` is left alone.
    """
    import importlib.util

    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    return url


def open_storage(url: str, root: Path, heartbeat_s: int = 60) -> Store:
    """Open `tune.storage`; a bad URL, a missing driver or a dead server is one clear line."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    url, kind, path = absolute_storage_url(url, root)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "journal":
            storage: optuna.storages.BaseStorage = JournalStorage(JournalFileBackend(str(path)))
        elif kind == "sqlite":
            # several local workers write one file: wait for the lock instead of failing at 5 s
            storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
        else:
            # Across machines a dead worker's pid cannot be checked: Optuna's heartbeat fails its
            # trial after 3 missed beats, and the callback queues the same params again.
            with warnings.catch_warnings():  # experimental in Optuna 5, and what we need here
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                                     heartbeat_stale_trial_callback=requeue_stale)
    except ImportError:
        raise VQVideoError(f"tune.storage {_hide_password(url)}: its database driver is not installed; "
                           "for PostgreSQL: pip install -e \".[postgres]\" (psycopg2-binary)") from None
    except Exception as err:  # noqa: BLE001 - sqlalchemy/optuna raise many types for this
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VQVideoError(f"cannot open tune.storage {_hide_password(url)} ({first[:200]}); "
                           "check the URL and that the database server is running") from None
    # not "<file>.lock": that is the name of Optuna's own journal lock
    lock = path.with_name(path.name + ".budget-lock") if path is not None else None
    return Store(url, storage, kind, lock)


def _hide_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show it without the userinfo
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"


@contextlib.contextmanager
def budget_lock(store: Store, name: str) -> Iterator[None]:
    """Serialise "is there budget left? -> create the trial" across workers.

    A file lock for the local storages, an advisory lock on PostgreSQL and MySQL. Other
    databases get no lock: there the study can end up to (workers - 1) trials over n_trials.
    """
    if store.lock_path is not None:
        import fcntl

        with open(store.lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    engine = getattr(store.storage, "engine", None)
    dialect = engine.dialect.name if engine is not None else ""
    if dialect not in ("postgresql", "mysql", "mariadb"):
        yield
        return
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        else:
            conn.execute(text("SELECT GET_LOCK(:k, 600)"), {"k": str(key)})
        try:
            yield
        finally:
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            else:
                conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": str(key)})
